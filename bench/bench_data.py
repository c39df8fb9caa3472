"""Throughput of the simulator data path at 224 x 224 (or --size).

    python bench/bench_data.py [--size 224] [--scenes 24]

Prints rendered frames per second in one process and with both cores (a process pool), with and
without writing PNG files, and questions generated (with well-posedness checks) per second.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from v2lo_utils.questions import TASKS, generate_question
from v2lo_utils.renderer import Renderer
from v2lo_utils.simulator import make_scene


def render_scenes(args: tuple[list[str], int, str | None]) -> int:
    """Render every frame of the scenes' clips; returns the number of frames."""
    ids, size, out = args
    renderer = Renderer(size, size)
    n = 0
    for sid in ids:
        scene = make_scene(sid, 0)
        for i, pose in enumerate(scene.clips[0].poses):
            frame = renderer.render(scene, pose)
            if out:
                Image.fromarray(frame.image).save(
                    Path(out) / f"{sid}_{i:02d}.png", compress_level=1
                )
            n += 1
    return n


def frames_per_second(ids: list[str], size: int, workers: int, out: str | None) -> float:
    chunks = [(ids[i::workers], size, out) for i in range(workers)]
    t = time.perf_counter()
    if workers == 1:
        n = render_scenes(chunks[0])
    else:
        with ProcessPoolExecutor(workers) as pool:
            n = sum(pool.map(render_scenes, chunks))
    return n / (time.perf_counter() - t)


def questions_per_second(n_scenes: int) -> float:
    rng = random.Random(0)
    maps = [make_scene(f"q{i}", 0).gt_map(make_scene(f"q{i}", 0).clips[0]) for i in range(n_scenes)]
    t = time.perf_counter()
    n = 0
    for m in maps:
        for task in TASKS:
            n += generate_question(task, m, rng) is not None
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--scenes", type=int, default=24, help="scenes of 16 frames each")
    args = ap.parse_args()
    ids = [f"bench{i}" for i in range(args.scenes)]
    render_scenes((ids[:1], args.size, None))  # warm up
    cores = os.cpu_count() or 1
    print(f"{args.scenes} scenes x 16 frames at {args.size} x {args.size}, {cores} cores")
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, min(2, cores)}):
            for out in (None, tmp):
                fps = frames_per_second(ids, args.size, workers, out)
                what = "render + PNG" if out else "render only "
                print(f"{what}  {workers} process(es): {fps:8.0f} frames/s")
    print(f"questions (7 tasks, well-posed): {questions_per_second(200):8.0f} questions/s")


if __name__ == "__main__":
    main()
