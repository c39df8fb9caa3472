"""What needs no model: the baselines a model must beat, and diagnostics over maps.

- :func:`blind_predictions`: one fixed completion per task, seeing neither frames nor question;
- :func:`question_only_predictions`: the question's objects at their mean training boxes, and
  the answer ``solve`` computes from that map (what a model that cannot see would write);
- :func:`cue_priors`: for the objects only later frames show, the error of priors that know
  one cue of the camera's motion (which frame shows the object, the turn direction, the frame's
  heading): what reading that cue from the frames is worth;
- :func:`diagnostics`: every question answered with the one ``solve`` from the ground-truth map
  (must score 1.0), grid maps (N x N over the room) and maps with Gaussian noise on every box
  coordinate, which measures the metric-vs-grid claim at the level of the representation.

Baseline predictions are {id: {"id", "completion"}}, scored like any model's.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from statistics import mean

from .benchmark import FRAME_GROUPS, row_kind
from .cogmap import CogMap, ObjectBox, format_response
from .questions import MC, TASKS, question_names, solve, write_think
from .scoring import answer_score


def oracle_score(row: dict, cogmap: CogMap) -> float:
    """The score of the answer ``cogmap`` implies for the row's question."""
    answer = solve(row["task"], row["params"], cogmap)
    return 0.0 if answer is None else answer_score(row_kind(row), answer, row["answer"])


def noisy_map(cogmap: CogMap, sigma: float, rng: random.Random) -> CogMap:
    """Every box coordinate plus N(0, sigma) meters (min/max re-sorted)."""
    out = []
    for o in cogmap.objects:
        x0, y0, x1, y1 = (v + rng.gauss(0.0, sigma) for v in o.bbox)
        out.append(ObjectBox(o.name, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))))
    return CogMap(tuple(out))


def _by_task(rows: Sequence[dict], scores: Sequence[float]) -> dict:
    groups: dict = defaultdict(list)
    for r, s in zip(rows, scores, strict=True):
        groups[r["task"]].append(s)
    return {t: mean(v) for t, v in sorted(groups.items())} | {
        "overall": mean(scores) if scores else 0.0
    }


def diagnostics(
    rows: Sequence[dict],
    grid_sizes: Sequence[int] = (10, 20),
    sigmas: Sequence[float] = (0.05, 0.1, 0.2, 0.4, 0.8),
    repeats: int = 3,
    seed: int = 0,
) -> dict:
    """Scores per task of answers solved from the ground-truth map, grid maps and noisy maps."""
    maps = [CogMap.from_json(r["map"]) for r in rows]
    out = {
        "ground_truth": _by_task(
            rows, [oracle_score(r, m) for r, m in zip(rows, maps, strict=True)]
        )
    }
    out["rounded_0.1m"] = _by_task(
        rows, [oracle_score(r, m.rounded()) for r, m in zip(rows, maps, strict=True)]
    )
    for n in grid_sizes:
        scores = [
            oracle_score(r, m.to_grid(n, tuple(r["map_extent"])))
            for r, m in zip(rows, maps, strict=True)
        ]
        out[f"grid_{n}"] = _by_task(rows, scores)
    rng = random.Random(seed)
    noise = {}
    for sigma in sigmas:
        scores = [
            mean(oracle_score(r, noisy_map(m, sigma, rng)) for _ in range(repeats))
            for r, m in zip(rows, maps, strict=True)
        ]
        noise[str(sigma)] = _by_task(rows, scores)
    out["noise"] = noise
    return out


# the cues a model could read from the frames about an object only later frames show, and what a
# prior on each is worth (cue_priors): none, the frame that first shows it, the camera's turn
# direction, both, and that frame's heading from the first camera's (Dataset.later_views)
CUES: dict[str, tuple[str, ...]] = {
    "none": (),
    "frame": ("frame",),
    "turn": ("turn",),
    "frame + turn": ("frame", "turn"),
    "heading": ("heading",),
}


def cue_priors(
    fit: Sequence[tuple[dict, tuple[float, float]]],
    test: Sequence[tuple[dict, tuple[float, float]]],
    cues: dict[str, tuple[str, ...]] = CUES,
) -> dict[str, dict]:
    """What knowing a cue is worth for placing the objects only later frames show: per named cue
    set, the mean center error (m, map frame) on ``test`` of a prior that puts each object at
    the mean center of the ``fit`` objects with the same values of those cues and frame count
    (of all ``fit`` objects where none has them), and ``n``. Items are (cues, true center),
    as :func:`~v2lo_utils.dataset.later_objects` gives them; {} when either is empty."""
    if not fit or not test:
        return {}

    def mean_center(items) -> tuple[float, float]:
        return mean(c[0] for _, c in items), mean(c[1] for _, c in items)

    everything = mean_center(fit)
    out = {}
    for name, keys in cues.items():
        groups: dict[tuple, list] = defaultdict(list)
        for item in fit:
            groups[(item[0]["num_frames"], *(item[0][k] for k in keys))].append(item)
        means = {key: mean_center(items) for key, items in groups.items()}
        errors = [
            math.dist(means.get((cue["num_frames"], *(cue[k] for k in keys)), everything), c)
            for cue, c in test
        ]
        out[name] = {"center_error_m": mean(errors), "n": len(errors)}
    return out


def cue_priors_by_group(
    fit: Sequence[tuple[dict, tuple[float, float]]],
    test: Sequence[tuple[dict, tuple[float, float]]],
) -> dict[str, dict]:
    """:func:`cue_priors` per frame-count group of ``test`` (1-4 frames, 8-16), as the
    summaries' ``map_by_view`` groups them; groups without objects left out."""
    out = {}
    for group, counts in FRAME_GROUPS.items():
        if priors := cue_priors(fit, [t for t in test if t[0]["num_frames"] in counts]):
            out[group] = priors
    return out


def _training_boxes(train_rows: Sequence[dict]) -> dict[str, list]:
    """Category -> every box (m, map frame) the training maps give it."""
    boxes: dict[str, list] = defaultdict(list)
    for r in train_rows:
        for o in r["map"]:
            boxes[o["object_name"]].append(o["bbox"])
    return boxes


def _mean_box(boxes: Sequence) -> tuple[float, ...]:
    return tuple(map(mean, zip(*boxes, strict=True)))


def blind_predictions(train_rows: Sequence[dict], rows: Sequence[dict]) -> dict[str, dict]:
    """The blind baseline: one fixed completion per task, seeing neither frames nor question.

    Its map lists the task's usual number of objects, the categories most often named in the
    task's training maps, each at its mean training box; its answer is the most frequent training
    answer (multiple choice: the letter) or the mean (numerical).
    """
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in train_rows:
        by_task[r["task"]].append(r)
    fixed = {}
    for task, trs in by_task.items():
        answers = [r["answer"] for r in trs]
        if TASKS[task].kind == MC:
            answer = max(sorted(set(answers)), key=answers.count)
        else:
            answer = f"{mean(float(a) for a in answers):.2f}"
        sizes = [len(r["map"]) for r in trs]
        n = max(sorted(set(sizes)), key=sizes.count)
        boxes = _training_boxes(trs)
        names = sorted(boxes, key=lambda k: (-len(boxes[k]), k))[:n]
        cogmap = CogMap(tuple(ObjectBox(k, _mean_box(boxes[k])) for k in names))
        fixed[task] = format_response(
            cogmap.rounded(), "A guess from the training set alone.", answer
        )
    return {str(r["id"]): {"id": r["id"], "completion": fixed.get(r["task"], "")} for r in rows}


def question_only_predictions(train_rows: Sequence[dict], rows: Sequence[dict]) -> dict[str, dict]:
    """The frame-blind baseline that reads the question: each object the question names at its
    category's mean training box (m, map frame), and the answer :func:`solve` computes from that
    map. What a model that copies names from the question but cannot see would write, so a model's
    map beats it only by using the frames."""
    means = {k: _mean_box(v) for k, v in _training_boxes(train_rows).items()}
    everywhere = _mean_box(list(means.values()))
    out = {}
    for r in rows:
        names = list(dict.fromkeys(question_names(r["task"], r["params"])))
        cogmap = CogMap(tuple(ObjectBox(n, means.get(n, everywhere)) for n in names)).rounded()
        answer = solve(r["task"], r["params"], cogmap) or ""
        try:
            think = write_think(r["task"], r["params"], cogmap)
        except ValueError:
            think = "The question's objects at their mean training boxes."
        out[str(r["id"])] = {"id": r["id"], "completion": format_response(cogmap, think, answer)}
    return out
