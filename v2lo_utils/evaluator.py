"""Model evaluation over a benchmark: greedy generation, one appended JSON line per question.

Each line holds the id, the completion, the parsed map, the extracted answer, the score and
whether extraction failed. An interrupted run resumes: ids already in the file are skipped, and a
partial last line is cut off first. Greedy decoding makes the results deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .benchmark import map_by_group, score_benchmark, score_row_safely, swap_frames
from .errors import PredictionsError
from .predictions import (
    append_records,
    claim,
    mismatched_rows,
    open_for_resume,
    read_predictions,
    row_fingerprint,
)


def evaluate_benchmark(
    model,
    processor,
    rows: Sequence[dict],
    root: str | Path,
    out_file: str | Path,
    max_new_tokens: int = 512,
    batch_size: int = 4,
    n_boot: int = 1000,
    progress: bool = True,
    generate=None,
    settings: dict | None = None,
    force: bool = False,
) -> dict:
    """Generate for the rows ``out_file`` lacks, append them, and score the whole file.

    ``generate``: rows -> completions, instead of transformers generation with ``model`` and
    ``processor`` (the vLLM engine of ``v2lo eval --engine vllm``). ``settings`` (model, engine,
    max_new_tokens, image size, ...) are stored beside the file; resuming a file made with other
    settings, or whose records answer other rows with the same ids, raises PredictionsError
    saying what differs, unless ``force`` (then those rows are answered again)."""
    from tqdm.auto import tqdm

    from .generation import generate_completions

    done = open_for_resume(out_file)
    claim(out_file, {"max_new_tokens": max_new_tokens, **(settings or {})}, bool(done), force)
    stale = set(mismatched_rows(rows, read_predictions(out_file).records))
    if stale and not force:
        raise PredictionsError(
            f"{out_file}: {len(stale)} predictions answer other benchmark rows with the same ids "
            f"(first: id {sorted(stale)[0]!r}); use another file, or force"
        )
    todo = [r for r in rows if str(r["id"]) not in done or str(r["id"]) in stale]
    bar = tqdm(
        total=len(rows),
        initial=len(rows) - len(todo),
        desc="benchmark",
        unit="q",
        disable=not progress,
    )
    for i in range(0, len(todo), batch_size):
        batch = todo[i : i + batch_size]
        completions = (
            generate(batch)
            if generate is not None
            else generate_completions(
                model, processor, batch, root, max_new_tokens, batch_size, progress=False
            )
        )
        append_records(
            out_file, (prediction_record(r, c) for r, c in zip(batch, completions, strict=True))
        )
        bar.update(len(batch))
    bar.close()
    return score_file(rows, out_file, n_boot)


def prediction_record(row: dict, completion: str) -> dict:
    """The line written for one generated completion: id, completion, the row's fingerprint and
    its scores (a row that cannot be scored is recorded with ``scoring_error``, never retried)."""
    rec = score_row_safely(row, completion)
    return {
        "id": row["id"],
        "completion": completion,
        "row_sha": row_fingerprint(row),
        **{k: v for k, v in rec.items() if k != "id"},
    }


def score_file(
    rows: Sequence[dict], path: str | Path, n_boot: int = 1000, force: bool = False
) -> dict:
    """Score a predictions file against benchmark rows, counting what the reader met.

    Raises PredictionsError when no record matches a benchmark id, or (unless ``force``) when
    records made by this project answer other rows with the same ids."""
    report = read_predictions(path)
    known = {str(r["id"]) for r in rows}
    if not known & set(report.records):
        raise PredictionsError(
            f"{path}: no prediction matches a benchmark id ({len(report.records)} records, "
            f"{len(report.bad_lines)} unreadable lines, {len(rows)} benchmark rows)"
        )
    stale = mismatched_rows(rows, report.records)
    if stale and not force:
        raise PredictionsError(
            f"{path}: {len(stale)} predictions were made for other benchmark rows with the same "
            f"ids (first: id {stale[0]!r}): another build or seed? force to score anyway"
        )
    extra = {"bad_lines": len(report.bad_lines), "duplicates": report.duplicates}
    return score_benchmark(rows, report.records, n_boot, extra)


def slug(label: str) -> str:
    """A file-name-safe version of a label."""
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_") or "model"


def evaluate_models(
    models: dict[str, str],
    rows: Sequence[dict],
    root: str | Path,
    out_dir: str | Path,
    backend: str = "auto",
    max_new_tokens: int = 512,
    batch_size: int = 4,
    n_boot: int = 1000,
    swap: bool = False,
) -> dict[str, dict]:
    """Evaluate each labelled model (folder or preset) into ``out_dir/<label>.jsonl``; resumable.

    With ``swap``, each model also answers the rows with another scene's frames
    (:func:`~v2lo_utils.benchmark.swap_frames`, ``<label>__swapped_frames.jsonl``), and its
    summary's ``controls.swapped`` holds their map metrics per frame-count group."""
    import gc

    from .models import load_model, model_fingerprint

    summaries = {}
    for label, source in models.items():
        loaded = load_model(source, backend)
        out_file = Path(out_dir) / f"{slug(label)}.jsonl"
        settings = {
            "model": str(source),
            "weights": model_fingerprint(loaded.path),
            "backend": loaded.backend,
        }
        summaries[label] = evaluate_benchmark(
            loaded.model,
            loaded.processor,
            rows,
            root,
            out_file,
            max_new_tokens,
            batch_size,
            n_boot,
            settings=settings,
        )
        if swap:  # frame counts whose rows come from too few scenes are left out
            other = swap_frames(rows, strict=False)
            out_swapped = Path(out_dir) / f"{slug(label)}__swapped_frames.jsonl"
            records = (
                evaluate_benchmark(
                    loaded.model,
                    loaded.processor,
                    other,
                    root,
                    out_swapped,
                    max_new_tokens,
                    batch_size,
                    n_boot=1,
                    settings=settings,
                )["records"]
                if other
                else []
            )
            summaries[label]["controls"] = {"swapped": map_by_group(records)}
        del loaded
        gc.collect()
    return summaries
