"""Append-only prediction files: one JSON line per question, safe to interrupt and resume.

Each line is flushed and synced as soon as its batch finishes. A run killed mid-write can leave
one partial last line: :func:`open_for_resume` cuts it off, so the file again holds only whole
records and the run continues with the ids it lacks.

Fingerprints say what made a file, so that nothing is resumed or scored against other input:

- every record this project writes carries ``row_sha``, the :func:`row_fingerprint` of the
  benchmark row it answers (a seed-0 prediction never scores against a seed-1 row of the same id);
- ``<file>.meta.json`` holds the run's settings (model, generation settings, image size); a
  resume with other settings is refused, saying what differs, unless forced.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PredictionsError
from .jsonl import atomic_write, json_lines

META_SUFFIX = ".meta.json"


@dataclass
class ReadReport:
    """What reading a predictions file met."""

    records: dict[str, dict] = field(default_factory=dict)  # by id (the last one wins)
    bad_lines: list[int] = field(default_factory=list)  # 1-based: see :func:`record_problem`
    duplicates: int = 0


def record_problem(rec: object) -> str | None:
    """Why a decoded line is not a prediction record ({"id": str | int, "completion": str})."""
    if not isinstance(rec, dict):
        return "not an object"
    if "id" not in rec or isinstance(rec["id"], bool) or not isinstance(rec["id"], (str, int)):
        return "no string or integer 'id'"
    if not isinstance(rec.get("completion"), str):
        return "no string 'completion'"
    return None


def read_predictions(path: str | Path) -> ReadReport:
    """Records of a JSONL predictions file; lines that are not UTF-8, not JSON or not records
    are counted in ``bad_lines``; never raises on content. Lines end at "\\n" only."""
    report = ReadReport()
    with open(path, "rb") as fh:
        data = fh.read()
    for i, rec, problem in json_lines(data):
        if problem is not None or record_problem(rec) is not None:
            report.bad_lines.append(i)
            continue
        key = str(rec["id"])
        if key in report.records:
            report.duplicates += 1
        report.records[key] = rec
    return report


def resume(path: str | Path) -> ReadReport:
    """What ``path`` already holds (created if missing), after cutting off a partial last line."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists():
        p.touch()
        return ReadReport()
    data = p.read_bytes()
    keep = data.rfind(b"\n") + 1 if not data.endswith(b"\n") else len(data)
    if keep != len(data):
        with open(p, "r+b") as fh:
            fh.truncate(keep)
    return read_predictions(p)


def open_for_resume(path: str | Path) -> set[str]:
    """Ids already in ``path`` (created if missing), after cutting off a partial last line."""
    return set(resume(path).records)


def encode_record(rec: dict) -> bytes:
    """One JSON line, UTF-8. Text that UTF-8 cannot hold (a lone surrogate a tokenizer emitted)
    is written as JSON escapes instead, so the record reads back exactly and never blocks a run."""
    try:
        return (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(rec, ensure_ascii=True) + "\n").encode("ascii")


def append_records(path: str | Path, records: Iterable[dict]) -> None:
    """Append whole lines, each encoded on its own, and make them durable before returning."""
    lines = b"".join(encode_record(rec) for rec in records)
    with open(path, "ab") as fh:
        fh.write(lines)
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------------------------------------
# Fingerprints


# What a question is: the same for a dataset row and the row a benchmark loader makes of it.
ROW_CONTENT = ("id", "task", "question", "options", "answer", "frames", "map", "params")


def row_fingerprint(row: Mapping) -> str:
    """16 hex digits of the SHA-256 of the row's content (:data:`ROW_CONTENT`, canonical JSON;
    ids and answers as text): what a prediction answered."""
    content = {k: row.get(k) for k in ROW_CONTENT}
    content.update(id=str(row.get("id")), answer=str(row.get("answer")))
    content.update(options=row.get("options") or [], frames=row.get("frames") or [])
    text = json.dumps(content, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def mismatched_rows(rows: Sequence[Mapping], records: Mapping[str, dict]) -> list[str]:
    """Ids whose record carries a ``row_sha`` other than its benchmark row's fingerprint."""
    return [
        str(r["id"])
        for r in rows
        if (rec := records.get(str(r["id"]))) is not None
        and "row_sha" in rec
        and rec["row_sha"] != row_fingerprint(r)
    ]


def meta_path(path: str | Path) -> Path:
    return Path(f"{path}{META_SUFFIX}")


def read_meta(path: str | Path) -> dict | None:
    """The settings stored beside a predictions file, or None when there are none."""
    p = meta_path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PredictionsError(f"{p}: not a valid settings file ({err})") from err


def differences(old: Mapping, new: Mapping) -> list[str]:
    """``["max_new_tokens: 512 -> 256", ...]`` for every setting that differs."""
    keys = sorted((set(old) | set(new)) - {"forced_over"})
    return [
        f"{k}: {old.get(k)!r:.80} -> {new.get(k)!r:.80}" for k in keys if old.get(k) != new.get(k)
    ]


def claim(path: str | Path, settings: Mapping, has_records: bool, force: bool = False) -> None:
    """Record ``settings`` beside ``path``; refuse (PredictionsError) to add to a file made with
    other settings, or to a non-empty file made without any, unless ``force``. An empty file
    takes the new settings whatever was recorded before."""
    old = read_meta(path) if has_records else None
    if not force:
        if old is None and has_records:
            raise PredictionsError(
                f"{path}: holds predictions made without a settings record; refusing to add to "
                "them: use another file, or force"
            )
        if old is not None and (diff := differences(old, settings)):
            raise PredictionsError(
                f"{path}: was made with other settings ({'; '.join(diff)}); use another file, "
                "or force"
            )
    doc = dict(settings)
    if force and old is not None and differences(old, settings):
        doc["forced_over"] = [
            *old.get("forced_over", []),
            {k: v for k, v in old.items() if k != "forced_over"},
        ]
    atomic_write(meta_path(path), json.dumps(doc, indent=2, default=str))
