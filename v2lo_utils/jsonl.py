"""JSON-lines files, read one way everywhere: a value per non-blank line, lines ending at "\\n"
only (a raw U+2028 inside a string is valid JSON, not a line break). Each reader decides what a
bad line means: loaders refuse the file, prediction readers count it. Files written whole
(manifests, settings, results) go through :func:`atomic_write`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path


def atomic_write(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: into a file beside it, then renamed over
    it, so a kill mid-write leaves the old file (or none), never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def json_lines(data: bytes) -> Iterator[tuple[int, object, str | None]]:
    """(line number, value, None) for each readable line, (line number, None, why) for each
    line that is not UTF-8 or not JSON; blank lines are skipped."""
    for i, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield i, None, f"not UTF-8 (byte {err.start + 1} of the line)"
            continue
        if not line.strip():
            continue
        try:
            yield i, json.loads(line), None
        except json.JSONDecodeError as err:
            yield i, None, f"not valid JSON ({err.msg})"
        except RecursionError:
            yield i, None, "not valid JSON (nested too deeply)"
