"""Throughput of the pure core: completions scored per second on realistic five-object responses.

    python bench/bench_core.py [--n 4000] [--repeat 5]

Prints, for one process: the paper reward ``compute_score`` (EasyR1 batch signature), the same
reward as a literal numpy reading of the spec (the original's style), and the TRL reward functions
(format, accuracy, map quality: the last parses every map).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from v2lo_utils.cogmap import format_response
from v2lo_utils.layout import random_scene_map
from v2lo_utils.questions import generate_question, relevant_map, write_think
from v2lo_utils.rewards import accuracy_reward, compute_score, format_reward, map_reward

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from paper_reward_reference import reference_score


def five_object_responses(n: int, seed: int = 0) -> list[dict]:
    """Responses with a five-object map, a think and an answer: half multiple choice (nearest
    object), half numerical (min distance); a third answer wrongly, a sixth has spaced tags."""
    rng = random.Random(seed)
    rows: list[dict] = []
    while len(rows) < n:
        scene = random_scene_map(rng, 10)
        task = "nearest_object" if len(rows) % 2 == 0 else "min_distance"
        q = generate_question(task, scene, rng)
        if q is None:
            continue
        shown = relevant_map(task, q.params, scene)
        others = [o for o in scene if o not in shown.objects]
        shown = type(shown)(shown.objects + tuple(others[: 5 - len(shown)])).rounded()
        think = write_think(task, q.params, shown)
        answer = q.answer if len(rows) % 3 else ("A" if task == "nearest_object" else "9.99")
        text = format_response(shown, think, answer)
        if len(rows) % 6 == 1:
            text = text.replace("</map><think>", "</map>\n< think >")
        rows.append({"response": text, "ground_truth": q.answer, "map": shown.to_json()})
    return rows


def rate(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = five_object_responses(args.n)
    completions = [r["response"] for r in rows]
    answers = [r["ground_truth"] for r in rows]
    maps = [r["map"] for r in rows]
    chars = sum(map(len, completions)) / len(completions)
    print(
        f"{len(rows)} five-object responses, {chars:.0f} characters on average, best of {args.repeat}"
    )
    results = {
        "compute_score (EasyR1 batch)": lambda: compute_score(rows),
        "spec-literal numpy reference": lambda: [
            reference_score(r["response"], r["ground_truth"]) for r in rows
        ],
        "TRL format_reward": lambda: format_reward(completions),
        "TRL accuracy_reward": lambda: accuracy_reward(completions, answer=answers),
        "TRL map_reward (parses maps)": lambda: map_reward(completions, map=maps),
    }
    for name, fn in results.items():
        print(f"{name:32s} {rate(fn, len(rows), args.repeat):>10,.0f} completions/s")
    print("\n1 MB looped completions (a model repeating itself until cut off), best of 3:")
    for name, text in looped_completions(1_000_000).items():
        batch = [{"response": text, "ground_truth": "B"}]
        for label, fn in (
            ("compute_score", lambda b=batch: compute_score(b)),
            ("map_reward", lambda t=text: map_reward([t], map=[maps[0]])),
        ):
            print(f"  {name:28s} {label:14s} {rate(fn, 1, 3):>8,.1f} completions/s")


def looped_completions(size: int) -> dict[str, str]:
    """Completions of ``size`` characters that loop the way a model does when it never stops:
    tags over and over (the format rule's worst case before), unclosed answers, and a map that
    lists the same object until the text is cut off."""
    obj = '{"object_name": "chair", "bbox": [0.1, 0.2, 0.3, 0.4]}, '
    loops = {
        "map/think/answer tags": "<map>" + "</map><think></think><answer>" * size,
        "unclosed <answer>": "<answer>" * size,
        "one object, endlessly": "<map>Establish a bird's-eye view : [" + obj * size,
        "closed map of ~18k objects": "",
    }
    closed = "<map>[" + obj * (size // len(obj) - 1)
    loops["closed map of ~18k objects"] = (
        closed[: size - 40].rstrip(", ") + "]</map><answer>B</answer>"
    )
    return {k: v[:size] for k, v in loops.items()}


if __name__ == "__main__":
    main()
