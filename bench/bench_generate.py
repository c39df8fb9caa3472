"""Greedy generation against batch size: held-out rows per second of the demo's evaluation
(300 new tokens, clips of 1-4 frames) at 4, 16 and 48 rows a batch, and whether each batch size
writes the same completions as batch 4 (left padding must not change greedy output); then the
largest batch without ``generation.grouped_query_sdpa`` (transformers' own SDPA path).

    python bench/bench_generate.py [--rows 48] [--steps 60] [--model DIR] [--data DIR]

Without ``--model``: the ``small`` preset's shape (without its perception stages: the same
throughput, minutes less), trained ``--steps`` SFT steps so that its completions have the
format's length. Threads fixed at the machine's cores (``V2LO_THREADS=fixed``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

os.environ["V2LO_THREADS"] = "fixed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--model", default="", help="a trained model folder (default: train one)")
    ap.add_argument("--data", default="outputs/data/demo/train")
    ap.add_argument("--batches", default="4,16,48")
    args = ap.parse_args()

    from v2lo_utils import generation
    from v2lo_utils.dataset import BuildConfig, Dataset, build_training_set
    from v2lo_utils.generation import generate_completions
    from v2lo_utils.models import load_model
    from v2lo_utils.presets import PRESETS, build_random_model
    from v2lo_utils.runs import held_out_rows
    from v2lo_utils.sft import SFTParams, train_sft

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if not (Path(data) / "train.jsonl").is_file():
            data = str(Path(tmp) / "data")
            build_training_set(data, BuildConfig(scenes=40, seed=0, image_size=112, workers=2))
        model = args.model
        if not model:
            shape = replace(PRESETS["small"], vision_steps=0, grounding_steps=0)
            base = build_random_model(shape, Path(tmp) / "small", "small")
            p = SFTParams(
                data_dir=data,
                output_dir=str(Path(tmp) / "sft"),
                model_source=str(base),
                max_steps=args.steps,
                batch_size=8,
                learning_rate=1e-3,
                max_frames=4,
                save_steps=10**6,
                logging_steps=10**6,
            )
            model = str(train_sft(p).final_dir)
        ds = Dataset.load(data)
        rows = held_out_rows(ds.rows, args.rows, 4)
        m = load_model(model)
        generate_completions(m.model, m.processor, rows[:2], ds.root, 300, 2, progress=False)
        print(f"{os.cpu_count()} cores; {len(rows)} held-out rows, 300 new tokens, greedy")
        print("| batch | rows/s | x batch 4 | completions as batch 4 |")
        print("|---|---|---|---|")
        ref, base_rate = None, None
        for b in map(int, args.batches.split(",")):
            t = time.perf_counter()
            out = generate_completions(m.model, m.processor, rows, ds.root, 300, b, progress=False)
            rate = len(rows) / (time.perf_counter() - t)
            ref, base_rate = ref or out, base_rate or rate
            same = sum(a == c for a, c in zip(out, ref, strict=True))
            print(f"| {b} | {rate:.2f} | {rate / base_rate:.2f} | {same}/{len(rows)} |", flush=True)
        # the same largest batch with transformers' own SDPA path (keys and values copied per
        # query head) instead of generation.grouped_query_sdpa
        with patch.object(generation, "grouped_query_sdpa", nullcontext):
            t = time.perf_counter()
            plain = generate_completions(
                m.model, m.processor, rows, ds.root, 300, b, progress=False
            )
            plain_rate = len(rows) / (time.perf_counter() - t)
        same = sum(a == c for a, c in zip(plain, out, strict=True))
        print(
            f"batch {b}: grouped-query SDPA {rate:.2f} rows/s, transformers' repeat_kv "
            f"{plain_rate:.2f} rows/s (ratio {rate / plain_rate:.2f}); same completions "
            f"{same}/{len(rows)}"
        )


if __name__ == "__main__":
    main()
