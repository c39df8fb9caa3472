"""The paper's claims as measurements over an ablation's results, with intervals and verdicts.

An ablation result is one trained variant at one seed with its per-question records on the same
QVS-Bench-Sim questions (:func:`~v2lo_utils.benchmark.score_row`'s ``id``, ``task``,
``num_frames``, ``score``, ``map_placement``). A claim compares two variants on the questions
both answered (or, for the frame-count claim, one variant's map accuracy across frame counts).
Intervals come from a two-level bootstrap: seeds (paired across variants: seed s of both trained
on the same rows in the same order), then questions, so they hold training noise as well as
question sampling. Scores are in points (0-100).

Verdicts: ``reproduced`` when the whole 95% interval is above 0 (the paper's direction);
``not reproduced`` when it lies below :data:`NULL_MARGIN` points (no effect of that size, or the
reverse); ``inconclusive at this scale`` otherwise.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from statistics import mean

from .benchmark import percentile_interval

NULL_MARGIN = 1.0  # points: an interval wholly below this rules out an effect worth the name
LONG_FRAMES = (8, 12, 16)
BEST_FRAMES = (4, 8)  # the paper's "4-8 frames give the best map accuracy"

# claim id -> what it says, the paper's figure, and the comparison: variant a minus variant b,
# on the tasks listed (None: all) and the frame counts listed (None: all)
CLAIMS: tuple[dict, ...] = (
    {
        "id": "metric_vs_grid",
        "claim": "Metric maps beat grid maps (10 x 10 cells)",
        "paper": "+4.92 on average (abstract; 3.24 in another version)",
        "a": "metric",
        "b": "grid",
    },
    {
        "id": "metric_vs_grid_distance",
        "claim": "... on distances",
        "paper": "the gain is on distance and size",
        "a": "metric",
        "b": "grid",
        "tasks": ("min_distance",),
    },
    {
        "id": "metric_vs_grid_size",
        "claim": "... on object sizes",
        "paper": "the gain is on distance and size",
        "a": "metric",
        "b": "grid",
        "tasks": ("object_size",),
    },
    {
        "id": "map_vs_no_map",
        "claim": "Writing the map before reasoning helps (vs think and answer only)",
        "paper": "helps (no figure in the text available here)",
        "a": "metric",
        "b": "no_map",
    },
    {
        "id": "map_vs_answer_only",
        "claim": "Map, then think, then answer beats a direct answer",
        "paper": "helps (no figure in the text available here)",
        "a": "metric",
        "b": "answer_only",
    },
    {
        "id": "rl_after_sft",
        "claim": "GRPO after SFT improves spatial reasoning",
        "paper": "improves (no figure in the text available here)",
        "a": "metric_grpo",
        "b": "metric",
    },
    {
        "id": "frame_mix",
        "claim": "Training on every frame count (vs 1-4 only) helps on 8-16-frame clips",
        "paper": "none in the text available here (the demo recipe's choice)",
        "a": "metric",
        "b": "metric_1to4",
        "frames": LONG_FRAMES,
    },
)


def verdict(lo: float, hi: float) -> str:
    """The verdict for a 95% interval (points) of an effect in the paper's direction."""
    if lo > 0:
        return "reproduced"
    if hi < NULL_MARGIN:
        return "not reproduced"
    return "inconclusive at this scale"


def _by_seed(results: Sequence[dict], variant: str) -> dict[int, dict[str, dict]]:
    """seed -> question id -> record, for one variant's results."""
    return {
        int(r["seed"]): {str(rec["id"]): rec for rec in r["records"]}
        for r in results
        if r["variant"] == variant
    }


def paired_effect(
    a: dict[int, dict[str, float]],
    b: dict[int, dict[str, float]],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict | None:
    """Mean of a - b (points) over the seeds and questions both have, with its two-level bootstrap
    95% interval (seeds, then questions, both with replacement). ``a``, ``b``: seed -> question
    id -> value (0-1). None when they share no seed and question."""
    seeds = sorted(set(a) & set(b))
    ids = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds))) if seeds else []
    if not ids:
        return None
    diff = [[100 * (a[s][q] - b[s][q]) for s in seeds] for q in ids]  # question x seed
    rng = random.Random(seed)
    k, m = len(seeds), len(ids)
    boots = []
    for _ in range(n_boot):
        cols = [rng.randrange(k) for _ in range(k)]
        rows = [diff[rng.randrange(m)] for _ in range(m)]
        boots.append(sum(row[c] for row in rows for c in cols) / (k * m))
    lo, hi = percentile_interval(boots)
    return {
        "effect": mean(x for row in diff for x in row),
        "ci": [lo, hi],
        "seeds": seeds,
        "n_questions": m,
        "per_seed": [mean(row[j] for row in diff) for j in range(k)],
    }


def _values(
    by_seed: dict[int, dict[str, dict]],
    keep: Callable[[dict], bool],
    key: str = "score",
) -> dict[int, dict[str, float]]:
    return {
        s: {q: float(rec[key]) for q, rec in recs.items() if keep(rec) and rec.get(key) is not None}
        for s, recs in by_seed.items()
    }


def compare(results: Sequence[dict], spec: dict, n_boot: int = 1000) -> dict | None:
    """One comparison claim of :data:`CLAIMS` measured on ``results``; None when a variant is
    missing."""
    tasks, frames = spec.get("tasks"), spec.get("frames")

    def keep(rec: dict) -> bool:
        return (tasks is None or rec["task"] in tasks) and (
            frames is None or rec.get("num_frames") in frames
        )

    a = _values(_by_seed(results, spec["a"]), keep)
    b = _values(_by_seed(results, spec["b"]), keep)
    found = paired_effect(a, b, n_boot) if a and b else None
    if found is None:
        return None
    return {**found, "verdict": verdict(*found["ci"])}


def frames_effect(
    results: Sequence[dict], variant: str = "metric", n_boot: int = 1000, seed: int = 0
) -> dict | None:
    """The frame-count claim on ``variant``'s maps: map accuracy (``map_placement``: 1 for a
    complete map with every center exact, graded by center error) per frame count, and the
    mean at :data:`BEST_FRAMES` minus the mean at the other counts (points), with a two-level
    bootstrap interval (seeds, then questions within each frame count)."""
    by_seed = _values(_by_seed(results, variant), lambda rec: True, "map_placement")
    frames_of = {str(rec["id"]): rec.get("num_frames") for r in results for rec in r["records"]}
    seeds = sorted(by_seed)
    ids = sorted(set.intersection(*(set(v) for v in by_seed.values()))) if seeds else []
    inside = [q for q in ids if frames_of[q] in BEST_FRAMES]
    outside = [q for q in ids if frames_of[q] not in BEST_FRAMES]
    if not inside or not outside:
        return None
    table = {q: [by_seed[s][q] for s in seeds] for q in ids}

    def gap(cols: list[int], ins: list[str], outs: list[str]) -> float:
        def avg(qs: list[str]) -> float:
            return mean(table[q][c] for q in qs for c in cols)

        return 100 * (avg(ins) - avg(outs))

    rng = random.Random(seed)
    k = len(seeds)
    boots = [
        gap(
            [rng.randrange(k) for _ in range(k)],
            [inside[rng.randrange(len(inside))] for _ in inside],
            [outside[rng.randrange(len(outside))] for _ in outside],
        )
        for _ in range(n_boot)
    ]
    lo, hi = percentile_interval(boots)
    per_frames = {
        str(n): 100 * mean(table[q][c] for q in ids if frames_of[q] == n for c in range(k))
        for n in sorted({frames_of[q] for q in ids})
    }
    return {
        "effect": gap(list(range(k)), inside, outside),
        "ci": [lo, hi],
        "seeds": seeds,
        "n_questions": len(ids),
        "per_frames": per_frames,
        "best": max(per_frames, key=per_frames.get),
        "verdict": verdict(lo, hi),
    }


def claims_table(results: Sequence[dict], n_boot: int = 1000) -> list[dict]:
    """Every claim of :data:`CLAIMS` that ``results`` hold both variants of, and the frame-count
    claim: claim, paper, measured effect (points), 95% interval, verdict, seeds, questions."""
    rows = []
    for spec in CLAIMS:
        found = compare(results, spec, n_boot)
        if found is not None:
            rows.append({"id": spec["id"], "claim": spec["claim"], "paper": spec["paper"], **found})
    frames = frames_effect(results, n_boot=n_boot)
    if frames is not None:
        rows.append(
            {
                "id": "frames_4_8",
                "claim": "4-8 input frames give the best map accuracy (placement, metric variant)",
                "paper": "4-8 frames best (a summary of the paper; no figure here)",
                **frames,
            }
        )
    return rows


def variant_summary(results: Sequence[dict]) -> list[dict]:
    """Per variant: seeds, training steps reached, and the QVS-Bench-Sim score (points) overall
    and per frame count, averaged over its seeds, with the seeds' range."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        overall = [100 * mean(rec["score"] for rec in r["records"]) for r in runs]
        frames = sorted({rec.get("num_frames") for r in runs for rec in r["records"]})
        per_frames = {
            str(n): mean(
                100 * mean(rec["score"] for rec in r["records"] if rec.get("num_frames") == n)
                for r in runs
            )
            for n in frames
        }
        out.append(
            {
                "variant": variant,
                "seeds": sorted(int(r["seed"]) for r in runs),
                "steps": [r.get("steps") for r in runs],
                "score": mean(overall),
                "score_range": [min(overall), max(overall)],
                "per_frames": per_frames,
            }
        )
    return out


def unequal_budgets(results: Sequence[dict]) -> list[str]:
    """The jobs that trained fewer steps than planned (their ``train`` summary's ``max_steps``):
    a slow machine's wall-clock cap stopped them short, so their comparisons are not at equal
    budget."""
    return [
        f"{r['variant']} seed {r['seed']}: {r['steps']} of {r['train']['max_steps']} steps"
        for r in results
        if r.get("train", {}).get("max_steps", 0) > 0 and r["steps"] < r["train"]["max_steps"]
    ]


def _fmt(x: float) -> str:
    return f"{x:+.1f}"


def claims_markdown(rows: Sequence[dict]) -> str:
    """The claims table as Markdown (the README's and the report's)."""
    lines = [
        "| claim | paper | measured (points) | 95% interval | verdict | seeds x questions |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["ci"]
        lines.append(
            f"| {r['claim']} | {r['paper']} | {_fmt(r['effect'])} | [{_fmt(lo)}, {_fmt(hi)}] | "
            f"{r['verdict']} | {len(r['seeds'])} x {r['n_questions']} |"
        )
    return "\n".join(lines)


def variants_markdown(rows: Sequence[dict]) -> str:
    """The variants' scores as Markdown: overall and per frame count, points."""
    frames = sorted({f for r in rows for f in r["per_frames"]}, key=int)
    head = "| variant | seeds | steps | QVS (seeds' range) | " + " | ".join(
        f"{f} fr" for f in frames
    )
    lines = [head + " |", "|---" * (4 + len(frames)) + "|"]
    for r in rows:
        lo, hi = r["score_range"]
        cells = " | ".join(f"{r['per_frames'].get(f, float('nan')):.1f}" for f in frames)
        steps = "/".join(str(s) for s in r["steps"])
        lines.append(
            f"| {r['variant']} | {len(r['seeds'])} | {steps} | {r['score']:.1f} "
            f"({lo:.1f}-{hi:.1f}) | {cells} |"
        )
    return "\n".join(lines)
