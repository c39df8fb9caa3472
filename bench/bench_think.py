"""The think probe (v2lo_utils.thinkprobe): how well the preset's language part learns the
think and answers when each row's exact map is given as text, no frames.

    python bench/bench_think.py [--model small] [--data outputs/data/demo/train]
                                [--steps 1000 4000] [--forms think answer] [--seed 0]
                                [--tasks vertical_direction ...]

Each (form, steps) trains a fresh copy of the model on the training split's rows of ``--tasks``
(the direction tasks by default) and scores greedy completions of the validation split's: the
answers' mean QVS-Bench score per task (chance 0.25 for the direction tasks) and, for direction
tasks, the share of thinks whose each step follows from the one before (centroids, frame, v,
signs, quadrant, option letter). The demo's SFT sees about 4,000 direction rows (1,200 steps of
8 rows, all tasks); 4,000 steps here are 32,000. One thread per process (OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from v2lo_utils.dataset import Dataset
from v2lo_utils.models import load_model
from v2lo_utils.questions import DIRECTIONS, TASKS
from v2lo_utils.thinkprobe import FORMS, generate_probe, probe_rows, score_probe, train_probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="small", help="a preset name or a local model folder")
    ap.add_argument("--data", default="outputs/data/demo/train", help="a built dataset folder")
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val", type=int, default=0, help="validation rows scored (0: all)")
    ap.add_argument("--tasks", nargs="+", default=list(DIRECTIONS), choices=list(TASKS))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    ds = Dataset.load(args.data)
    tasks = args.tasks
    print(f"model {args.model}, data {args.data}, seed {args.seed}; mean QVS-Bench score per task")
    head = "| form | steps | s | " + " | ".join(tasks)
    print(head + " | direction steps right (centroids, frame, v, signs, quadrant, option) |")
    print("|---" * (4 + len(tasks)) + "|")
    for form in args.forms:
        train = probe_rows(ds.rows["train"], form, tasks)
        val = probe_rows(ds.rows["val"], form, tasks)
        val = val[: args.val] if args.val else val
        for steps in args.steps:
            loaded = load_model(args.model)
            t0 = time.perf_counter()
            train_probe(loaded.model, loaded.processor.tokenizer, train, steps, seed=args.seed)
            seconds = time.perf_counter() - t0
            texts = generate_probe(loaded.model, loaded.processor.tokenizer, val)
            got = score_probe(val, texts)
            accs = " | ".join(f"{got[t]['score']:.2f} ({got[t]['n']})" for t in tasks if t in got)
            shares = "; ".join(
                ", ".join(f"{v:.2f}" for v in got[t]["steps"].values())
                for t in tasks
                if got.get(t, {}).get("steps")
            )
            print(f"| {form} | {steps} | {seconds:.0f} | {accs} | {shares} |", flush=True)


if __name__ == "__main__":
    main()
