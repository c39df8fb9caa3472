"""Append-only prediction files: one JSON line per question, safe to interrupt and resume.

Each line is flushed and synced as soon as its batch finishes. A run killed mid-write can leave
one partial last line: :func:`open_for_resume` cuts it off, so the file again holds only whole
records and the run continues with the ids it lacks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ReadReport:
    """What reading a predictions file met."""

    records: dict[str, dict] = field(default_factory=dict)  # by id (the last one wins)
    bad_lines: list[int] = field(default_factory=list)  # 1-based: not JSON or no id/completion
    duplicates: int = 0


def read_predictions(path: str | Path) -> ReadReport:
    """Records of a JSONL predictions file ({"id", "completion", ...}); never raises on content."""
    report = ReadReport()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                report.bad_lines.append(i)
                continue
            if not isinstance(rec, dict) or "id" not in rec:
                report.bad_lines.append(i)
                continue
            key = str(rec["id"])
            if key in report.records:
                report.duplicates += 1
            completion = rec.get("completion")
            rec["completion"] = completion if isinstance(completion, str) else ""
            report.records[key] = rec
    return report


def open_for_resume(path: str | Path) -> set[str]:
    """Ids already in ``path`` (created if missing), after cutting off a partial last line."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists():
        p.touch()
        return set()
    data = p.read_bytes()
    keep = data.rfind(b"\n") + 1 if not data.endswith(b"\n") else len(data)
    if keep != len(data):
        with open(p, "r+b") as fh:
            fh.truncate(keep)
    return set(read_predictions(p).records)


def append_records(path: str | Path, records: Iterable[dict]) -> None:
    """Append whole lines and make them durable before returning."""
    with open(path, "a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
