"""Scoring completions against dataset rows: format, map quality and answer (spec section 3)."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import mean

from .cogmap import CogMap, parse_response
from .rewards import paper_score
from .scoring import match_maps, score_answer

# the headline metrics of :func:`summarize`, for tables and figures
SUMMARY_KEYS = (
    "format_rate",
    "map_parse_rate",
    "object_recall",
    "object_precision",
    "answer_score",
    "mean_reward",
)


def score_completion(row: dict, completion: str) -> dict:
    """One completion: format, parsed map against the row's map, answer score, paper reward."""
    r = parse_response(completion)
    rec = {
        "id": row.get("id"),
        "task": row["task"],
        "num_frames": row.get("num_frames"),
        "format_ok": r.format_ok,
        "map_parsed": r.cogmap is not None,
        "map_error": r.map_error,
    }
    if r.cogmap is not None and row.get("map") is not None:
        rec.update(
            {
                f"map_{k}": v
                for k, v in match_maps(r.cogmap, CogMap.from_json(row["map"])).summary().items()
            }
        )
    ans = score_answer(row["task"], completion, row["answer"])
    rec.update(
        score=ans.score,
        extraction_failed=ans.failed,
        reward=paper_score(completion, row["answer"])["overall"],
    )
    return rec


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return mean(vals) if vals else None


def summarize(records: Sequence[dict]) -> dict:
    """Means over records: format compliance, map parse rate, recall/precision (0 for unparsed
    maps), center error (m, matched objects), answer score, paper reward."""
    n = len(records)
    if n == 0:
        return {"n": 0}
    return {
        "n": n,
        "format_rate": sum(r["format_ok"] for r in records) / n,
        "map_parse_rate": sum(r["map_parsed"] for r in records) / n,
        "object_recall": sum(r.get("map_recall", 0.0) for r in records) / n,
        "object_precision": sum(r.get("map_precision", 0.0) for r in records) / n,
        "center_error_m": _mean([r.get("map_center_error_m") for r in records]),
        "map_iou": _mean([r.get("map_iou") for r in records]),
        "answer_score": sum(r["score"] for r in records) / n,
        "extraction_failure_rate": sum(r["extraction_failed"] for r in records) / n,
        "mean_reward": sum(r["reward"] for r in records) / n,
    }


def evaluate_model(
    model, processor, rows: Sequence[dict], root, max_new_tokens: int = 512, batch_size: int = 4
):
    """Generate for ``rows`` and score: (records, completions, summary)."""
    from .generation import generate_completions

    completions = generate_completions(model, processor, rows, root, max_new_tokens, batch_size)
    records = [score_completion(r, c) for r, c in zip(rows, completions, strict=True)]
    return records, completions, summarize(records)


def sampled_reward(
    model,
    processor,
    rows: Sequence[dict],
    root,
    samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 512,
    batch_size: int = 4,
    seed: int = 0,
) -> dict:
    """The policy's expected paper reward on ``rows``: ``samples`` completions per row at
    ``temperature`` (what GRPO optimises), with its format and accuracy parts."""
    from .generation import generate_completions

    completions = generate_completions(
        model,
        processor,
        rows,
        root,
        max_new_tokens,
        batch_size,
        temperature=temperature,
        samples=samples,
        seed=seed,
    )
    scores = [paper_score(c, rows[i // samples]["answer"]) for i, c in enumerate(completions)]
    return {
        "n_prompts": len(rows),
        "samples": samples,
        "temperature": temperature,
        "mean_reward": mean(s["overall"] for s in scores) if scores else 0.0,
        "format": mean(s["format"] for s in scores) if scores else 0.0,
        "accuracy": mean(s["accuracy"] for s in scores) if scores else 0.0,
    }
