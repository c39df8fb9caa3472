"""Question files a user already has: QVS-Bench layout (this project's rows) or VSI-Bench layout.

Both load into one row shape: id, task, kind ('multiple_choice' or 'numerical'), question,
options (lettered strings), answer (letter or number as text), num_frames, frames, params, map.
Bad input raises :class:`DataError` naming the file, the row and the field.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import DataError
from .jsonl import json_lines
from .questions import MC, NUMERICAL, TASKS
from .schema import check_benchmark_row, frame_path_problem

__all__ = ["DataError", "check_frames", "load_benchmark", "read_jsonl_rows"]


def read_jsonl_rows(path: Path) -> list:
    """The JSON values of a JSON-lines file, one per non-blank line. Lines end at "\\n" only (a raw
    U+2028 inside a string is valid JSON, not a line break); a line that is not UTF-8 or not
    JSON raises DataError naming the file and line."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from err
    rows = []
    for i, value, problem in json_lines(data):
        if problem is not None:
            raise DataError(f"{path}: line {i}: {problem}")
        rows.append(value)
    return rows


def _read_rows(path: Path) -> list:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a benchmark file")
    if path.suffix == ".parquet":
        import pyarrow as pa  # datasets depends on pyarrow
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{path}: not a readable parquet file ({err})") from err
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 (byte {err.start + 1})") from err
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of rows")
        return data
    return read_jsonl_rows(path)


def _field(path: Path, i: int, row: dict, name: str, kind: type | tuple = str) -> object:
    if not isinstance(row, dict):
        raise DataError(f"{path}: row {i}: expected an object, got {type(row).__name__}")
    if name not in row:
        raise DataError(f"{path}: row {i}: field '{name}' is missing")
    value = row[name]
    if not isinstance(value, kind):
        raise DataError(f"{path}: row {i}: field '{name}' has type {type(value).__name__}")
    return value


def _qvs_row(path: Path, i: int, row: dict) -> dict:
    task = _field(path, i, row, "task")
    if task not in TASKS:
        raise DataError(f"{path}: row {i}: field 'task': unknown task {task!r}")
    frames = row.get("frames", [])
    if not isinstance(frames, list):
        raise DataError(f"{path}: row {i}: field 'frames' must be a list of paths")
    out = {
        **row,
        "id": str(_field(path, i, row, "id", (str, int))),
        "task": task,
        "kind": TASKS[task].kind,
        "question": _field(path, i, row, "question"),
        "answer": str(_field(path, i, row, "answer", (str, int, float))),
        "options": row.get("options") or [],
        "num_frames": row.get("num_frames", len(frames) or None),
        "frames": frames,
    }
    check_benchmark_row(out, path, i)
    return out


def _vsi_row(path: Path, i: int, row: dict) -> dict:
    options = row.get("options") or []
    if not isinstance(options, list):
        raise DataError(f"{path}: row {i}: field 'options' must be a list")
    out = {
        "id": str(row.get("id", i - 1)),
        "task": _field(path, i, row, "question_type"),
        "kind": MC if options else NUMERICAL,
        "question": _field(path, i, row, "question"),
        "options": options,
        "answer": str(_field(path, i, row, "ground_truth", (str, int, float))),
        "num_frames": None,
        "frames": [],
        "scene_name": row.get("scene_name"),
        "source": row.get("dataset", "vsi-bench"),
    }
    check_benchmark_row(out, path, i, names={"answer": "ground_truth"})
    return out


def load_benchmark(path: str | Path) -> list[dict]:
    """Rows of a QVS-Bench (``task``/``answer``) or VSI-Bench (``question_type``/``ground_truth``)
    file: .jsonl, .json or .parquet, or a folder holding qvs_bench.jsonl."""
    p = Path(path)
    if p.is_dir():
        p = p / "qvs_bench.jsonl"
    rows = _read_rows(p)
    if not rows:
        raise DataError(f"{p}: holds no rows")
    out = []
    for i, row in enumerate(rows, start=1):
        if isinstance(row, dict) and "question_type" in row and "task" not in row:
            out.append(_vsi_row(p, i, row))
        else:
            out.append(_qvs_row(p, i, row))
    seen: set[str] = set()
    for i, r in enumerate(out, start=1):
        if r["id"] in seen:
            raise DataError(f"{p}: row {i}: field 'id': duplicate id {r['id']!r}")
        seen.add(r["id"])
    return out


def check_frames(rows: list[dict], root: str | Path, source: str | Path) -> None:
    """Raise DataError naming the file, row and field of the first frame that is not on disk."""
    root_p = Path(root)
    for i, row in enumerate(rows, start=1):
        for j, f in enumerate(row.get("frames", [])):
            problem = frame_path_problem(f)
            if problem:
                raise DataError(f"{source}: row {i}: field 'frames[{j}]': {problem}")
            if not (root_p / f).is_file():
                raise DataError(
                    f"{source}: row {i}: field 'frames[{j}]': missing file {root_p / f}"
                )
