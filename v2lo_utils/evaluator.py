"""Model evaluation over a benchmark: greedy generation, one appended JSON line per question.

Each line holds the id, the completion, the parsed map, the extracted answer, the score and
whether extraction failed. An interrupted run resumes: ids already in the file are skipped, and a
partial last line is cut off first. Greedy decoding makes the results deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .benchmark import map_by_group, score_benchmark, score_row, swap_frames
from .predictions import append_records, open_for_resume, read_predictions


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
) -> dict:
    """Generate for the rows ``out_file`` lacks, append them, and score the whole file.

    ``generate``: rows -> completions, instead of transformers generation with ``model`` and
    ``processor`` (the vLLM engine of ``v2lo eval --engine vllm``)."""
    from tqdm.auto import tqdm

    from .generation import generate_completions

    done = open_for_resume(out_file)
    todo = [r for r in rows if str(r["id"]) not in done]
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
    rec = score_row(row, completion)
    return {
        "id": row["id"],
        "completion": completion,
        **{k: v for k, v in rec.items() if k != "id"},
    }


def score_file(rows: Sequence[dict], path: str | Path, n_boot: int = 1000) -> dict:
    """Score a predictions file against benchmark rows, counting what the reader met."""
    report = read_predictions(path)
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

    from .models import load_model

    summaries = {}
    for label, source in models.items():
        loaded = load_model(source, backend)
        out_file = Path(out_dir) / f"{slug(label)}.jsonl"
        summaries[label] = evaluate_benchmark(
            loaded.model, loaded.processor, rows, root, out_file, max_new_tokens, batch_size, n_boot
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
                )["records"]
                if other
                else []
            )
            summaries[label]["controls"] = {"swapped": map_by_group(records)}
        del loaded
        gc.collect()
    return summaries
