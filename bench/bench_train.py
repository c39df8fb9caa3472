"""Training throughput on this machine: SFT samples per second for the tiny and small presets,
next to a plain PyTorch loop over the same batches (the ratio is TRL's overhead), with the
lookup loss (``SFTParams.lookup_weight``; its first-frame targets are computed before training),
with the lookup and copy losses (``copy_weight``; its targets come from each batch), with those
and the frame and seek losses (``frame_weight``, ``seek_weight``), with the lookup and copy
losses and the coordinate regression loss (``regression_weight``), and GRPO steps per second
(LoRA, 2 prompts x 4 sampled completions per step).

    python bench/bench_train.py [--steps 30] [--batch 8]

Both paths collate the same rows with the same collator each step, start from the same weights,
and use AdamW with the same learning rate; one thread (OMP_NUM_THREADS=1). The presets are built
in their shape only, without their perception stages (the same throughput; minutes less).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from v2lo_utils.dataset import BuildConfig, Dataset, build_training_set
from v2lo_utils.grpo import GRPOParams, train_grpo
from v2lo_utils.models import load_model
from v2lo_utils.presets import PRESETS, build_random_model
from v2lo_utils.sft import FrameLoadingCollator, SFTParams, sft_rows, train_sft


def plain_loop(model_dir: Path, rows: list[dict], steps: int, batch: int, lr: float) -> float:
    loaded = load_model(model_dir)
    model, collate = loaded.model, FrameLoadingCollator(loaded.processor)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    t = time.perf_counter()
    for s in range(steps):
        chunk = [rows[(s * batch + i) % len(rows)] for i in range(batch)]
        loss = model(**collate(chunk)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return steps * batch / (time.perf_counter() - t)


def trl_run(
    data: Path,
    model_dir: Path,
    out: Path,
    steps: int,
    batch: int,
    lr: float,
    frames: int,
    lookup: float = 0.0,
    copy: float = 0.0,
    frame: float = 0.0,
    seek: float = 0.0,
    regression: float = 0.0,
) -> float:
    p = SFTParams(
        data_dir=str(data),
        output_dir=str(out),
        model_source=str(model_dir),
        max_steps=steps,
        batch_size=batch,
        learning_rate=lr,
        max_frames=frames,
        save_steps=10**6,
        logging_steps=10**6,
        lookup_weight=lookup,
        copy_weight=copy,
        frame_weight=frame,
        seek_weight=seek,
        regression_weight=regression,
    )
    return train_sft(p).samples_per_second


def grpo_run(data: Path, model_dir: Path, out: Path, args: argparse.Namespace) -> float:
    g = GRPOParams(
        data_dir=str(data),
        output_dir=str(out),
        model_source=str(model_dir),
        max_steps=args.grpo_steps,
        batch_size=8,
        num_generations=4,
        max_completion_length=args.completion,
        max_frames=args.frames,
        lora_r=8,
        lora_alpha=16,
        learning_rate=1e-4,
        save_steps=10**6,
        logging_steps=10**6,
    )
    return train_grpo(g).steps_per_second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=4, help="rows with at most this many frames")
    ap.add_argument("--grpo-steps", type=int, default=10)
    ap.add_argument("--completion", type=int, default=128, help="GRPO max completion tokens")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_training_set(tmp / "data", BuildConfig(scenes=12, seed=7, image_size=112, workers=2))
        ds = Dataset.load(tmp / "data")
        rows = sft_rows(ds.rows["train"], ds.root, args.frames)
        print(
            f"{len(rows)} rows of <= {args.frames} frames, batch {args.batch}, {args.steps} steps, 1 thread"
        )
        for preset in ("tiny", "small"):
            shape = replace(PRESETS[preset], vision_steps=0, grounding_steps=0)
            model_dir = build_random_model(shape, tmp / preset, preset)
            trl_sps = trl_run(
                tmp / "data",
                model_dir,
                tmp / f"out-{preset}",
                args.steps,
                args.batch,
                1e-3,
                args.frames,
            )
            plain_sps = plain_loop(model_dir, rows, args.steps, args.batch, 1e-3)
            print(
                f"{preset:6s} SFT (TRL SFTTrainer) {trl_sps:7.1f} samples/s | plain PyTorch loop "
                f"{plain_sps:7.1f} samples/s | ratio {trl_sps / plain_sps:.2f}"
            )
            run = (tmp / "data", model_dir, tmp / f"lookup-{preset}", args.steps, args.batch)
            lookup_sps = trl_run(*run, 1e-3, args.frames, lookup=1.0)
            print(
                f"{preset:6s} SFT with the lookup loss (weight 1) {lookup_sps:7.1f} samples/s | "
                f"ratio to without {lookup_sps / trl_sps:.2f}"
            )
            run = (tmp / "data", model_dir, tmp / f"copy-{preset}", args.steps, args.batch)
            both_sps = trl_run(*run, 1e-3, args.frames, lookup=1.0, copy=1.0)
            print(
                f"{preset:6s} SFT with the lookup and copy losses (weight 1 each) {both_sps:7.1f} "
                f"samples/s | ratio to without {both_sps / trl_sps:.2f}"
            )
            run = (tmp / "data", model_dir, tmp / f"seek-{preset}", args.steps, args.batch)
            four_sps = trl_run(*run, 1e-3, args.frames, lookup=1.0, copy=1.0, frame=1.0, seek=1.0)
            print(
                f"{preset:6s} SFT with the lookup, copy, frame and seek losses (weight 1 each) "
                f"{four_sps:7.1f} samples/s | ratio to lookup and copy {four_sps / both_sps:.2f}"
            )
            run = (tmp / "data", model_dir, tmp / f"regression-{preset}", args.steps, args.batch)
            reg_sps = trl_run(*run, 1e-3, args.frames, lookup=1.0, copy=1.0, regression=1.0)
            print(
                f"{preset:6s} SFT with the lookup and copy losses and the coordinate regression "
                f"loss (weight 1 each) {reg_sps:7.1f} samples/s | ratio to lookup and copy "
                f"{reg_sps / both_sps:.2f}"
            )
            grpo_sps = grpo_run(tmp / "data", model_dir, tmp / f"grpo-{preset}", args)
            print(
                f"{preset:6s} GRPO (TRL GRPOTrainer, 2 prompts x 4 completions of <= "
                f"{args.completion} tokens) {grpo_sps:6.2f} steps/s"
            )


if __name__ == "__main__":
    main()
