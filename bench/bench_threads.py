"""CPU threads, idle and beside a competing process: the demo's SFT recipe (``small`` shape,
vision tower fixed, batch 8, 1-4 frames) and greedy generation, each with torch on all cores,
on one thread, and with the thread count chosen while it runs (``v2lo_utils.threads``).

    python bench/bench_threads.py [--steps 40] [--rows 16] [--data outputs/data/demo/train]

"Beside a competing process": one CPU-bound Python loop started in its own session (``setsid``),
as another user's or terminal's job is; the kernel's autogroups share the cores by session, so
nice does not protect the run from it. Each setting runs in a fresh subprocess (torch fixes its
thread pool per process). Prints SFT samples/s, generation rows/s and the chosen counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, tempfile, time
from pathlib import Path
mode, model, data, steps, rows_n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
from v2lo_utils.dataset import Dataset
from v2lo_utils.generation import generate_completions
from v2lo_utils.models import load_model
from v2lo_utils.sft import SFTParams, train_sft
with tempfile.TemporaryDirectory() as out:
    p = SFTParams(data_dir=data, output_dir=out, model_source=str(model), max_steps=steps,
                  batch_size=8, learning_rate=1e-3, max_frames=4, save_steps=10**6,
                  logging_steps=10**6, freeze_vision=True)
    r = train_sft(p)
ds = Dataset.load(data)
rows = [r for r in ds.rows["val"] if r["num_frames"] <= 4][:rows_n]
m = load_model(model)
t = time.perf_counter()
generate_completions(m.model, m.processor, rows, ds.root, 300, 8, progress=False)
gen = len(rows) / (time.perf_counter() - t)
th = r.threads or {}
print("RESULT " + json.dumps({"sft": r.samples_per_second, "gen": gen,
      "chosen": [c["threads"] for c in th.get("choices", [])]}), flush=True)
"""


def run(mode: str, model: Path, data: str, steps: int, rows: int, cores: int) -> dict:
    n = cores if mode in ("all", "auto") else 1
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(n),
        "MKL_NUM_THREADS": str(n),
        "V2LO_THREADS": "auto" if mode == "auto" else "fixed",
    }
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", WORKER, mode, str(model), data, str(steps), str(rows)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{mode}: worker failed\n{out.stderr[-3000:]}")
    return {**json.loads(line[7:]), "seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rows", type=int, default=16, help="held-out rows generated (300 tokens)")
    ap.add_argument("--data", default="outputs/data/demo/train")
    args = ap.parse_args()
    from dataclasses import replace

    from v2lo_utils.dataset import BuildConfig, build_training_set
    from v2lo_utils.presets import PRESETS, build_random_model

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if not (Path(data) / "train.jsonl").is_file():
            data = str(Path(tmp) / "data")
            build_training_set(data, BuildConfig(scenes=40, seed=0, image_size=112, workers=2))
        shape = replace(PRESETS["small"], vision_steps=0, grounding_steps=0)
        model = build_random_model(shape, Path(tmp) / "small", "small")
        print(f"{cores} cores; SFT {args.steps} steps of 8 samples, generation of {args.rows} rows")
        print("| condition | threads | SFT samples/s | generation rows/s | chosen |")
        print("|---|---|---|---|---|")
        for condition in ("idle", "busy"):
            busy = None
            if condition == "busy":
                busy = subprocess.Popen(
                    [sys.executable, "-c", "while True: pass"], start_new_session=True
                )
                time.sleep(1)
            try:
                for mode in ("all", "one", "auto"):
                    r = run(mode, model, data, args.steps, args.rows, cores)
                    label = {"all": str(cores), "one": "1", "auto": "chosen while running"}[mode]
                    chosen = " -> ".join(map(str, r["chosen"])) or "-"
                    print(
                        f"| {condition} | {label} | {r['sft']:.1f} | {r['gen']:.2f} | {chosen} |",
                        flush=True,
                    )
            finally:
                if busy is not None:
                    busy.kill()


if __name__ == "__main__":
    main()
