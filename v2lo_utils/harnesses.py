"""Prediction files of the evaluation harnesses researchers already run, read and written.

- lmms-eval ``--log_samples`` JSONL: one line per document with ``doc_id`` (the row's position in
  the benchmark file), the model output in ``filtered_resps`` (``resps`` as a fallback), and the
  document itself in ``doc`` when the task logs it (its ``id`` then names the row);
- VLMEvalKit prediction files (.xlsx, .tsv, .json): a table with ``index`` and ``prediction``;
  ``index`` is a benchmark id where one matches, else the row's position.

:func:`read_harness` turns either into the project's records (benchmark id -> {"id",
"completion"}), counting what it could not use, so ``v2lo score`` scores them like its own
JSONL; :func:`write_harness` writes the project's predictions in either layout.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from .errors import PredictionsError
from .jsonl import json_lines
from .predictions import ReadReport, encode_record, read_predictions

FORMATS = ("v2lo", "lmms-eval", "vlmevalkit")
TABLE_SUFFIXES = (".xlsx", ".tsv", ".json")


def detect_format(path: str | Path) -> str:
    """The layout of a predictions file: VLMEvalKit for tables (.xlsx, .tsv, .json), lmms-eval for
    JSONL whose first record has ``doc_id``, else the project's own JSONL."""
    p = Path(path)
    if p.suffix.lower() in TABLE_SUFFIXES:
        return "vlmevalkit"
    with open(p, "rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    first = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return "v2lo"
                return "lmms-eval" if isinstance(first, dict) and "doc_id" in first else "v2lo"
    return "v2lo"


def _first_text(value: object) -> str | None:
    """The first string in a (nested) list of responses, as lmms-eval logs them."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for v in value:
            text = _first_text(v)
            if text is not None:
                return text
    return None


def _row_id(key: object, rows: Sequence[dict], ids: set[str], by_position: bool) -> str | None:
    """A benchmark id for a harness's key: the id itself where one matches (VLMEvalKit index), else
    the row at that position (``by_position``)."""
    if key is None or isinstance(key, bool):
        return None
    if not by_position and str(key) in ids:
        return str(key)
    try:
        i = int(key)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return str(rows[i]["id"]) if 0 <= i < len(rows) else None


def _add(report: ReadReport, line: int, key: str | None, completion: str | None) -> None:
    if key is None or completion is None:
        report.bad_lines.append(line)
        return
    if key in report.records:
        report.duplicates += 1
    report.records[key] = {"id": key, "completion": completion}


def _read_lmms_eval(path: Path, rows: Sequence[dict]) -> ReadReport:
    report, ids = ReadReport(), {str(r["id"]) for r in rows}
    for i, rec, problem in json_lines(path.read_bytes()):
        if problem is not None or not isinstance(rec, dict):
            report.bad_lines.append(i)
            continue
        doc = rec.get("doc") if isinstance(rec.get("doc"), dict) else {}
        named = doc.get("id", rec.get("id"))
        key = str(named) if named is not None and str(named) in ids else None
        key = key or _row_id(rec.get("doc_id"), rows, ids, by_position=True)
        text = _first_text(rec.get("filtered_resps"))
        _add(report, i, key, text if text is not None else _first_text(rec.get("resps")))
    return report


def _table(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # columns -> {row: value} (pandas' default orient)
            cols = {k: v for k, v in data.items() if isinstance(v, dict)}
            keys = sorted({k for v in cols.values() for k in v}, key=lambda k: int(k))
            return [{c: cols[c].get(k) for c in cols} for k in keys]
        return data if isinstance(data, list) else []
    from openpyxl import load_workbook

    sheet = load_workbook(path, read_only=True, data_only=True).active
    it = sheet.iter_rows(values_only=True)
    header = [str(h) for h in next(it, ())]
    return [dict(zip(header, values, strict=False)) for values in it]


def _read_vlmevalkit(path: Path, rows: Sequence[dict]) -> ReadReport:
    report, ids = ReadReport(), {str(r["id"]) for r in rows}
    try:
        table = _table(path)
    except Exception as err:  # a corrupt workbook, bad JSON, undecodable text
        raise PredictionsError(f"{path}: not a readable VLMEvalKit table ({err})") from err
    for i, rec in enumerate(table, start=2):  # line 1 is the header
        if not isinstance(rec, dict):
            report.bad_lines.append(i)
            continue
        pred = rec.get("prediction")
        text = None if pred is None else str(pred)
        _add(report, i, _row_id(rec.get("index"), rows, ids, by_position=False), text)
    return report


def read_harness(path: str | Path, rows: Sequence[dict], fmt: str | None = None) -> ReadReport:
    """Records (benchmark id -> {"id", "completion"}) of a predictions file in any layout of
    :data:`FORMATS` (detected when ``fmt`` is None), with the lines it could not use."""
    p = Path(path)
    fmt = fmt or detect_format(p)
    if fmt == "v2lo":
        return read_predictions(p)
    if fmt == "lmms-eval":
        return _read_lmms_eval(p, rows)
    if fmt == "vlmevalkit":
        return _read_vlmevalkit(p, rows)
    raise PredictionsError(f"{p}: unknown predictions format {fmt!r}; one of {', '.join(FORMATS)}")


def write_harness(
    path: str | Path, rows: Sequence[dict], records: dict[str, dict], fmt: str
) -> Path:
    """Write predictions (benchmark id -> {"completion"}) for ``rows`` in a harness's layout:
    lmms-eval samples JSONL, or a VLMEvalKit table (.tsv or .xlsx by the suffix) with index,
    question, answer and prediction."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    present = [(i, r, records[str(r["id"])]) for i, r in enumerate(rows) if str(r["id"]) in records]
    if fmt == "lmms-eval":
        lines = [
            {
                "doc_id": i,
                "doc": {"id": r["id"], "question": r["question"]},
                "target": r["answer"],
                "resps": [[rec["completion"]]],
                "filtered_resps": [rec["completion"]],
            }
            for i, r, rec in present
        ]
        p.write_bytes(b"".join(encode_record(x) for x in lines))
        return p
    if fmt != "vlmevalkit":
        raise PredictionsError(f"{p}: cannot write format {fmt!r}; lmms-eval or vlmevalkit")
    header = ["index", "question", "answer", "prediction"]
    table = [[r["id"], r["question"], r["answer"], rec["completion"]] for _, r, rec in present]
    if p.suffix.lower() == ".xlsx":
        from openpyxl import Workbook

        book = Workbook()
        sheet = book.active
        for values in [header, *table]:
            sheet.append(values)
        book.save(p)
    else:
        with open(p, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t")
            writer.writerows([header, *table])
    return p
