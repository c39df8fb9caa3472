"""The ``v2lo`` command line.

v2lo parse [FILE] [--answer GT]   split a completion into map/think/answer (JSON), with rewards
v2lo demo [--seed S]              one question of every task over a random layout, with targets
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence

from . import __version__


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as err:
        raise SystemExit(f"v2lo: cannot read {path}: {err.strerror}") from err


def cmd_parse(args: argparse.Namespace) -> int:
    from .cogmap import parse_response
    from .rewards import paper_score

    text = _read(args.file)
    r = parse_response(text)
    out = {
        "format_ok": r.format_ok,
        "map": r.cogmap.to_json() if r.cogmap is not None else None,
        "map_error": r.map_error,
        "think": r.think,
        "answer": r.answer,
    }
    if args.answer is not None:
        out["reward"] = paper_score(text, args.answer)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .layout import random_scene_map
    from .questions import TASKS, generate_question, make_target, solve
    from .rewards import compute_score
    from .scoring import score_answer

    rng = random.Random(args.seed)
    scene = random_scene_map(rng, args.objects)
    print(f"Scene (seed {args.seed}): {len(scene)} objects: {', '.join(scene.names())}\n")
    for task in TASKS:
        q = generate_question(task, scene, rng)
        if q is None:
            print(f"[{task}] no well-posed question in this scene\n")
            continue
        target = make_target(q, scene)
        reward = compute_score([{"response": target, "ground_truth": q.answer}])[0]
        bench = score_answer(task, target, q.answer)
        if solve(q.task, q.params, scene) != q.answer:
            raise RuntimeError(f"{task}: solve disagrees with the stored answer")
        print(f"[{task}] {q.prompt()}\n  answer: {q.answer}\n  target: {target}")
        print(f"  paper reward {reward['overall']:.2f}, benchmark score {bench.score:.2f}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="v2lo", description="Video2Layout workbook")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("parse", help="parse a completion into map, think and answer (JSON)")
    sp.add_argument("file", nargs="?", default="-", help="completion text file (default: stdin)")
    sp.add_argument("--answer", help="ground truth: also print the paper's reward")
    sp.set_defaults(func=cmd_parse)

    sp = sub.add_parser("demo", help="one question of every task over a random layout")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--objects", type=int, default=10)
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
