"""QVS-Bench scoring: records, summaries, controls.

:func:`score_benchmark` scores completions made anywhere against benchmark rows: per task x frame
count, per task, per frame count, overall (micro: every question counts once; macro: every task
counts once), the extraction-failure rate, map metrics per frame count, the correlation between
map quality and answer score, and bootstrap confidence intervals. Scores are in [0, 1].

Controls say where a model's maps and answers come from: the per-axis Pearson r between predicted
and true object centers (x lateral, y depth), the same rows with another scene's frames
(:func:`swap_frames`: a model that reads its frames gets worse there), and consistency, the
score of the model's answer against what ``solve`` computes from the model's own map.

Baselines and model-free diagnostics are in :mod:`v2lo_utils.baselines`; generation and
resumable prediction files in :mod:`v2lo_utils.evaluation`.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from statistics import mean

from .cogmap import CogMap, format_ok, parse_response
from .questions import DIRECTIONS, TASKS, THINK_STEPS, solve, think_steps
from .rewards import paper_score
from .scoring import answer_score, extract_answer, match_maps, named_option

# the version of score_row's record: predictions files store it (``scored_by``), and a stored
# score is reused only when it matches; bump it when score_row's fields or rules change
SCORE_VERSION = 5  # 4: map_first_frame; 5: think_steps


def row_kind(row: dict) -> str:
    return row.get("kind") or TASKS[row["task"]].kind


def score_row(row: dict, completion: str) -> dict:
    """Score one completion: the answer (benchmark extraction: the last answer tag), the paper's
    format rule and reward, and, when the row has a map, the parsed map against it (``map_*`` keys
    from :meth:`MapMatch.summary`; recall and quality 0 when no map parses), the matched objects'
    centers (``map_pairs``: [pred x, pred y, true x, true y] in m, map frame) and ``consistency``:
    the answer scored against the answer ``solve`` computes from the parsed map (None when no map
    parses or it lacks an object the question names); and ``map_answer``: that answer of the map
    scored against the truth, what the map alone is worth (0 when no map parses or it lacks an
    object the question names); for a lettered row, ``think_option``: the letter of the option
    its think names (:func:`~v2lo_utils.scoring.named_option`; None when it names none); for a
    direction row with a parsed map, ``think_steps`` (:func:`~v2lo_utils.questions.think_steps`:
    which steps of its think follow from what comes before them; None when not in the targets'
    form); and, when the row records its objects' visibility, ``map_first_frame``: per matched
    pair, whether the first sampled frame shows the object (any pixel) or only later frames do."""
    kind = row_kind(row)
    got = extract_answer(kind, completion)
    score = answer_score(kind, got, row["answer"])
    rec = {
        "id": row["id"],
        "task": row["task"],
        "num_frames": row.get("num_frames"),
        "extracted": got,
        "extraction_failed": got is None,
        "score": score,
        "format_ok": format_ok(completion),
        "reward": paper_score(completion, row["answer"])["overall"],
    }
    if row.get("options"):
        rec["think_option"] = named_option(completion, row["options"])
    if row.get("map") is not None:
        parsed = parse_response(completion)
        pred = parsed.cogmap
        rec.update(map=pred.to_json() if pred is not None else None, map_error=parsed.map_error)
        rec.update(map_pairs=[], consistency=None)
        if pred is not None:
            truth = CogMap.from_json(row["map"])
            match = match_maps(pred, truth)
            rec.update({f"map_{k}": v for k, v in match.summary().items()})
            rec["map_pairs"] = [
                [*pred.objects[i].center, *truth.objects[j].center] for i, j in match.pairs
            ]
            seen = row.get("visibility")
            if seen is not None and len(seen) == len(truth.objects):
                rec["map_first_frame"] = [bool(seen[j] and seen[j][0] > 0) for _, j in match.pairs]
            if "params" in row and row["task"] in DIRECTIONS:
                rec["think_steps"] = think_steps(row["task"], row["params"], parsed.think, pred)
            own = solve(row["task"], row["params"], pred) if "params" in row else None
            rec["consistency"] = None if own is None else answer_score(kind, got, own)
            if "params" in row:
                rec["map_answer"] = 0.0 if own is None else answer_score(kind, own, row["answer"])
        else:
            rec.update(map_recall=0.0, map_center_error_m=None, map_quality=0.0)
            if "params" in row:
                rec["map_answer"] = 0.0
    return rec


def score_row_safely(row: dict, completion: str) -> dict:
    """:func:`score_row`, or, for a row it cannot score (a broken ``map`` or answer that got past
    the loaders), a zero-score record with ``scoring_error`` saying why: one bad row never stops
    a run, and is never regenerated over and over."""
    try:
        return score_row(row, completion)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        return {
            "id": row.get("id"),
            "task": row.get("task"),
            "num_frames": row.get("num_frames"),
            "extracted": None,
            "extraction_failed": True,
            "score": 0.0,
            "format_ok": format_ok(completion),
            "reward": 0.0,
            "scoring_error": f"{type(err).__name__}: {err}",
        }


def _mean(values: Sequence[float]) -> float | None:
    return mean(values) if values else None


def _group(records: Sequence[dict], key: Callable[[dict], object]) -> dict:
    groups: dict = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return dict(groups)


def bootstrap_ci(
    values: Sequence[float], n: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile bootstrap interval of the mean."""
    if not values:
        return [0.0, 0.0]
    rng = random.Random(seed)
    k = len(values)
    means = [sum(values[rng.randrange(k)] for _ in range(k)) / k for _ in range(n)]
    return list(percentile_interval(means, level))


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of ``values`` (bootstrap replicates): the sorted values at
    the (1 -+ level) / 2 quantiles, by index (no interpolation)."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered[int((1 - level) / 2 * (n - 1))], ordered[int((1 + level) / 2 * (n - 1))]


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 3:
        return None
    mx, my = mean(x), mean(y)
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    if sx == 0 or sy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / (sx * sy)


FRAME_GROUPS: dict[str, tuple[int, ...]] = {"1-4": (1, 4), "8-16": (8, 12, 16)}


def pair_controls(pairs: Sequence[Sequence[float]]) -> dict:
    """Over matched objects' centers ([pred x, pred y, true x, true y], m, map frame): their
    number, the per-axis Pearson r (x lateral, y depth) and the mean center error (m)."""
    return {
        "n_objects": len(pairs),
        "r_x": pearson([p[0] for p in pairs], [p[2] for p in pairs]),
        "r_y": pearson([p[1] for p in pairs], [p[3] for p in pairs]),
        "center_error_m": _mean([math.dist(p[:2], p[2:]) for p in pairs]),
    }


def map_controls(records: Sequence[dict]) -> dict:
    """Pooled over the records' matched objects: their number, the per-axis Pearson r of predicted
    against true centers (x lateral, y depth), the mean center error (m); and the mean
    consistency of answers with the records' own maps, over the records where it is defined; and
    the mean score of the answers ``solve`` computes from the records' own maps (``map_answer``,
    None when no record has one)."""
    pairs = [p for r in records for p in r.get("map_pairs") or []]
    cons = [r["consistency"] for r in records if r.get("consistency") is not None]
    own = [r["map_answer"] for r in records if r.get("map_answer") is not None]
    return {
        **pair_controls(pairs),
        "consistency": _mean(cons),
        "consistency_defined": len(cons) / len(records) if records else 0.0,
        "map_answer": _mean(own),
    }


def map_by_group(records: Sequence[dict]) -> dict[str, dict]:
    """:func:`map_controls` per frame-count group (1-4 frames, 8-16 frames) and over all."""
    out = {
        g: map_controls([r for r in records if r.get("num_frames") in ks])
        for g, ks in FRAME_GROUPS.items()
    }
    out["all"] = map_controls(records)
    return out


def map_by_view(records: Sequence[dict]) -> dict[str, dict]:
    """:func:`pair_controls` per frame-count group (and over all) for the objects the first
    sampled frame shows (``first_frame``) and those only later frames show (``later_frames``):
    the map frame is the first camera's, so the second kind needs the camera's motion. Records
    without ``map_first_frame`` are left out; {} when none has it."""
    seen = [r for r in records if r.get("map_first_frame") is not None]
    if not seen:
        return {}
    groups = {g: [r for r in seen if r.get("num_frames") in ks] for g, ks in FRAME_GROUPS.items()}
    groups["all"] = seen

    def pairs(rs: Sequence[dict], first: bool) -> list:
        return [
            p
            for r in rs
            for p, f in zip(r.get("map_pairs") or [], r["map_first_frame"], strict=True)
            if f is first
        ]

    return {
        g: {
            "first_frame": pair_controls(pairs(rs, True)),
            "later_frames": pair_controls(pairs(rs, False)),
        }
        for g, rs in groups.items()
    }


def frames_key(record: dict) -> str:
    """Frame-count label of a record ('n/a' for benchmarks without frame counts, e.g. VSI-Bench)."""
    return str(record["num_frames"]) if record.get("num_frames") else "n/a"


def _by_frames(records: Sequence[dict]) -> list[tuple[str, list[dict]]]:
    groups = _group(records, frames_key)
    return sorted(groups.items(), key=lambda kv: (0, int(kv[0])) if kv[0].isdigit() else (1, 0))


def headline(records: Sequence[dict], pooled: dict) -> dict:
    """The headline metrics of scored records (:data:`HEADLINE_KEYS` and a few more), each a
    mean over all records: format compliance, map parse rate, object recall and precision (0 for
    unparsed maps), center error (m, matched objects) and IoU, answer score, paper reward; and,
    from ``pooled`` (:func:`map_controls` of their matched objects), the per-axis center
    correlations, the answers' consistency with the model's own maps and the score of the answers
    those maps give (``map_answer``); and ``think_follows``: over the records whose think names
    an option (``think_named`` of them), the share whose answer is that option (None if none)."""
    n = len(records)
    named = [r for r in records if r.get("think_option") is not None]
    return {
        "format_rate": sum(r["format_ok"] for r in records) / n if n else 0.0,
        "map_parse_rate": sum(r.get("map") is not None for r in records) / n if n else 0.0,
        "object_recall": sum(r.get("map_recall", 0.0) for r in records) / n if n else 0.0,
        "object_precision": sum(r.get("map_precision", 0.0) for r in records) / n if n else 0.0,
        "center_error_m": _mean_defined([r.get("map_center_error_m") for r in records]),
        "map_iou": _mean_defined([r.get("map_iou") for r in records]),
        "answer_score": sum(r["score"] for r in records) / n if n else 0.0,
        "mean_reward": sum(r["reward"] for r in records) / n if n else 0.0,
        "r_x": pooled["r_x"],
        "r_y": pooled["r_y"],
        "consistency": pooled["consistency"],
        "map_answer": pooled["map_answer"],
        "think_follows": _mean([float(r["extracted"] == r["think_option"]) for r in named]),
        "think_named": len(named),
    }


def think_step_shares(records: Sequence[dict]) -> dict:
    """Over the records whose direction think could be judged (``think_steps`` not None): their
    number (``n``) and, per step of :data:`~v2lo_utils.questions.THINK_STEPS`, the share that
    follows from what comes before it (None where no record judges that step)."""
    judged = [r["think_steps"] for r in records if r.get("think_steps")]
    shares = {k: _mean([float(s[k]) for s in judged if s.get(k) is not None]) for k in THINK_STEPS}
    return {"n": len(judged), **shares}


def _mean_defined(values: Sequence[float | None]) -> float | None:
    return _mean([v for v in values if v is not None])


def summarize_records(records: Sequence[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """The one summary of scored records: :func:`headline` metrics and the QVS-Bench tables."""
    scores = [r["score"] for r in records]
    tasks = sorted(_group(records, lambda r: r["task"]).items())
    by_task = {t: mean(r["score"] for r in rs) for t, rs in tasks}
    by_frames = {k: mean(r["score"] for r in rs) for k, rs in _by_frames(records)}
    cells = {t: _by_frames(rs) for t, rs in tasks}  # (frame count, its records) per task
    by_task_frames = {t: {k: mean(r["score"] for r in ks) for k, ks in c} for t, c in cells.items()}
    mapped = [r for r in records if "map_quality" in r]
    map_by_frames = {
        k: {
            "object_recall": mean(r["map_recall"] for r in rs),
            "center_error_m": _mean(
                [r["map_center_error_m"] for r in rs if r["map_center_error_m"] is not None]
            ),
            "map_quality": mean(r["map_quality"] for r in rs),
            "parse_rate": mean(r["map"] is not None for r in rs),
            **{k2: v for k2, v in map_controls(rs).items() if k2 in ("r_x", "r_y")},
        }
        for k, rs in _by_frames(mapped)
    }
    groups = map_by_group(mapped)  # records without a map have no pairs nor consistency
    return {
        "n": len(records),
        **headline(records, groups["all"]),
        "overall": mean(scores) if scores else 0.0,
        "overall_macro": mean(by_task.values()) if by_task else 0.0,
        "by_task": by_task,
        "by_frames": by_frames,
        "by_task_frames": by_task_frames,
        "n_by_task_frames": {t: {k: len(ks) for k, ks in c} for t, c in cells.items()},
        "extraction_failure_rate": mean(r["extraction_failed"] for r in records)
        if records
        else 0.0,
        "map_by_frames": map_by_frames,
        "map_answer_by_task": {
            t: _mean([r["map_answer"] for r in rs if r.get("map_answer") is not None])
            for t, rs in tasks
        },
        "map_answer_correlation": pearson(
            [r["map_quality"] for r in mapped], [r["score"] for r in mapped]
        ),
        "map_by_group": groups,
        "map_by_view": map_by_view(mapped),
        "think_steps": think_step_shares(records),
        "ci95": {
            "overall": bootstrap_ci(scores, n_boot, seed),
            "by_task": {t: bootstrap_ci([r["score"] for r in rs], n_boot, seed) for t, rs in tasks},
        },
    }


def score_benchmark(
    rows: Sequence[dict],
    predictions: dict[str, dict],
    n_boot: int = 1000,
    extra: dict | None = None,
    scored: dict[str, dict] | None = None,
) -> dict:
    """Score ``predictions`` (id -> record with "completion") against benchmark ``rows``.

    Questions without a prediction score 0; predictions for unknown ids are ignored. The summary's
    ``counts`` say how many of each were met (``extra`` adds reader counts such as bad lines).
    ``scored``: id -> the record :func:`score_row` made of that prediction for this very row
    earlier, used as it is (each row is scored once).
    """
    known = {str(r["id"]) for r in rows}
    records, missing, empty = [], 0, 0
    for row in rows:
        key = str(row["id"])
        pred = predictions.get(key)
        completion = pred.get("completion", "") if pred else ""
        missing += pred is None
        empty += pred is not None and not completion.strip()
        done = (scored or {}).get(key)
        records.append(done if done is not None else score_row_safely(row, completion))
    summary = summarize_records(records, n_boot)
    summary["counts"] = {
        "questions": len(rows),
        "predictions": len(predictions),
        "missing": missing,
        "unknown": sum(1 for k in predictions if k not in known),
        "empty": empty,
        "extraction_failures": sum(r["extraction_failed"] for r in records),
        "scoring_errors": sum("scoring_error" in r for r in records),
        **(extra or {}),
    }
    summary["records"] = records
    return summary


def subset(rows: Sequence[dict], n: int) -> list[dict]:
    """``n`` of the benchmark's rows with its shares: each task x frame-count cell gets ``n`` times
    its share of the rows (largest remainders round; ties to the cell met first), taking the
    cell's first rows, and the rows keep their order. A smaller ``n`` gives a subset of a larger
    one's. ``n`` <= 0 or >= len(rows): every row. The first ``n`` rows would not do: the file
    lists a scene's questions together, so its head over- and under-fills cells (in the demo's
    500, its first 150 hold one relative-direction question at 4 frames, against 2.7 by its share)."""
    if n <= 0 or n >= len(rows):
        return list(rows)
    cells: dict = defaultdict(list)
    for i, r in enumerate(rows):
        cells[(r["task"], r.get("num_frames"))].append(i)
    quota = {k: n * len(v) / len(rows) for k, v in cells.items()}
    take = {k: math.floor(q) for k, q in quota.items()}
    by_remainder = sorted(cells, key=lambda k: (take[k] - quota[k], cells[k][0]))
    for k in by_remainder[: n - sum(take.values())]:
        take[k] += 1
    return [rows[i] for i in sorted(i for k, idx in cells.items() for i in idx[: take[k]])]


def swap_frames(rows: Sequence[dict], seed: int = 0, strict: bool = True) -> list[dict]:
    """The rows with the frames of another scene: the "uses the frames" control. Within each
    frame count the rows are shuffled (seeded) and each takes the frames of a row from a
    different scene; question, answer and ground-truth map stay the row's own. When one scene
    holds more than half of a frame count's rows no such swap exists: ``strict`` raises
    ValueError, otherwise that frame count's rows are left out of the result."""
    out: list[dict] = [dict(r) for r in rows]
    dropped: set[int] = set()
    groups: dict = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r.get("num_frames")].append(i)
    rng = random.Random(f"v2lo-swap:{seed}")
    for k, idx in groups.items():
        sizes = Counter(rows[i]["scene_id"] for i in idx)
        shift = max(sizes.values())
        if 2 * shift > len(idx):
            if not strict:
                dropped.update(idx)
                continue
            raise ValueError(
                f"cannot swap frames: one scene holds {shift} of the {len(idx)} {k}-frame rows"
            )
        # rows grouped by scene, rotated by the largest group: no row meets its own scene
        order = sorted(idx, key=lambda i: (rows[i]["scene_id"], rng.random()))
        for pos, i in enumerate(order):
            donor = rows[order[(pos + shift) % len(order)]]
            out[i].update(
                frames=list(donor["frames"]),
                frame_indices=list(donor.get("frame_indices", [])),
                swapped_from=donor["scene_id"],
            )
    return [r for i, r in enumerate(out) if i not in dropped]


def format_table(summary: dict) -> str:
    """A plain-text table: tasks x frame counts, with per-task, per-frames and overall scores."""
    frames = list(summary["by_frames"])
    width = max([len(t) for t in summary["by_task"]] + [12])
    lines = [f"{'task':{width}s} " + " ".join(f"{k:>6s}" for k in frames) + "    all"]
    for task, cells in summary["by_task_frames"].items():
        row = " ".join(f"{100 * cells[k]:6.1f}" if k in cells else "     -" for k in frames)
        lines.append(f"{task:{width}s} {row} {100 * summary['by_task'][task]:6.1f}")
    lines.append(
        f"{'all':{width}s} "
        + " ".join(f"{100 * summary['by_frames'][k]:6.1f}" for k in frames)
        + f" {100 * summary['overall']:6.1f}"
    )
    c = summary["counts"]
    lines.append(
        f"overall {100 * summary['overall']:.1f} (macro {100 * summary['overall_macro']:.1f}); extraction "
        f"failures {100 * summary['extraction_failure_rate']:.1f}%; {c['questions']} questions, "
        f"{c['missing']} missing, {c['unknown']} unknown ids, {c['empty']} empty, "
        f"{c.get('bad_lines', 0)} unreadable lines, {c.get('duplicates', 0)} duplicates"
    )
    return "\n".join(lines)


# the headline metrics, for tables and figures (notebooks 02, 03 and the report)
HEADLINE_KEYS = (
    "format_rate",
    "map_parse_rate",
    "object_recall",
    "object_precision",
    "answer_score",
    "mean_reward",
    "consistency",
    "map_answer",
)
# what `v2lo score --json` writes: the summary less its per-record list
SUMMARY_FIELDS = (
    "n",
    "format_rate",
    "map_parse_rate",
    "object_recall",
    "object_precision",
    "center_error_m",
    "map_iou",
    "answer_score",
    "mean_reward",
    "r_x",
    "r_y",
    "consistency",
    "map_answer",
    "think_follows",
    "think_named",
    "overall",
    "overall_macro",
    "by_task",
    "by_frames",
    "by_task_frames",
    "n_by_task_frames",
    "extraction_failure_rate",
    "map_by_frames",
    "map_answer_by_task",
    "map_answer_correlation",
    "map_by_group",
    "map_by_view",
    "think_steps",
    "ci95",
    "counts",
)
