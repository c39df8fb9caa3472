"""Scoring completions against dataset rows: format, map quality and answer (spec section 3)."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import mean

from .benchmark import score_row
from .rewards import paper_score

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
    """One completion against its row: the benchmark's record (format, map, answer, reward)."""
    return score_row(row, completion)


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
        "map_parse_rate": sum(r.get("map") is not None for r in records) / n,
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
