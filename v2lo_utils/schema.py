"""One schema for the rows every stage reads: benchmark rows, dataset rows, prediction records.

Checked at the door, before any work starts: types, ranges, frame paths inside the dataset folder,
frame count = ``num_frames``, an option letter within the options for multiple choice, a finite
number for numerical answers, a ground-truth ``map`` that parses. Each check raises
:class:`~v2lo_utils.errors.DataError` naming the file, the row (1-based) and the field.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

from .cogmap import CogMap, MapParseError
from .errors import DataError, where
from .questions import MC, NUMERICAL, TASKS, solve
from .scoring import finite_number

LETTERS = string.ascii_uppercase

# What every stage after the build reads of a dataset row (dataset.make_row writes more).
DATASET_FIELDS = ("id", "task", "question", "answer", "prompt", "frames", "num_frames", "target")


def frame_path_problem(path: object) -> str | None:
    """Why ``path`` is not a frame path relative to, and inside, its dataset folder; None if it is."""
    if not isinstance(path, str) or not path.strip():
        return "must be a non-empty path string"
    if "\x00" in path:
        return "holds a NUL character"
    posix, windows = PurePosixPath(path), PureWindowsPath(path)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        return f"{path!r} is absolute: frame paths are relative to the dataset folder"
    if ".." in posix.parts or ".." in windows.parts:
        return f"{path!r} leaves the dataset folder"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_frames(row: Mapping, path: str | Path, i: int) -> None:
    """``frames`` a list of relative paths inside the folder; ``num_frames`` (when given) a
    positive int equal to their number."""
    frames = row.get("frames", [])
    if not isinstance(frames, list):
        raise DataError(
            f"{where(path, i, 'frames')}: must be a list of paths, got {type(frames).__name__}"
        )
    for j, f in enumerate(frames):
        problem = frame_path_problem(f)
        if problem:
            raise DataError(f"{where(path, i, f'frames[{j}]')}: {problem}")
    k = row.get("num_frames")
    if k is None:
        return
    if not _is_int(k) or k < 1:
        raise DataError(
            f"{where(path, i, 'num_frames')}: must be a positive integer, got {k!r:.40}"
        )
    if frames and k != len(frames):
        raise DataError(
            f"{where(path, i, 'num_frames')}: is {k} but the row has {len(frames)} frames"
        )


def check_answer(row: Mapping, path: str | Path, i: int, answer_field: str = "answer") -> None:
    """A multiple-choice answer is one option letter (within ``options`` when the row lists them);
    a numerical answer is a finite number."""
    answer, kind = row.get("answer"), row.get("kind")
    options = row.get("options") or []
    at = where(path, i, answer_field)
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise DataError(f"{where(path, i, 'options')}: must be a list of strings")
    if kind == MC:
        letter = answer.strip().upper() if isinstance(answer, str) else ""
        if len(letter) != 1 or letter not in LETTERS:
            raise DataError(f"{at}: {answer!r:.40} is not an option letter")
        if options and LETTERS.index(letter) >= len(options):
            raise DataError(f"{at}: {letter} is beyond the row's {len(options)} options")
    elif kind == NUMERICAL:
        if finite_number(answer) is None:
            hint = " and the row has no options" if not options else ""
            raise DataError(f"{at}: {answer!r:.40} is not a finite number{hint}")
    else:
        raise DataError(f"{where(path, i, 'kind')}: {kind!r} is neither {MC!r} nor {NUMERICAL!r}")


def check_map(row: Mapping, path: str | Path, i: int) -> None:
    """The ground-truth ``map``, when present, parses as a cognitive map."""
    if row.get("map") is None:
        return
    try:
        CogMap.from_json(row["map"], where="map")
    except MapParseError as err:
        raise DataError(f"{where(path, i)}: field {err}") from err


def check_benchmark_row(
    row: Mapping, path: str | Path, i: int, names: Mapping[str, str] | None = None
) -> None:
    """A loaded benchmark row (loaders' shape): id, question, task, kind and answer, options,
    frames and num_frames, map and params. ``names`` maps a field to the name the file used
    (VSI-Bench's ``ground_truth``) so the message names what the user wrote."""
    names = names or {}
    if not isinstance(row.get("id"), str) or not row["id"].strip():
        raise DataError(
            f"{where(path, i, names.get('id', 'id'))}: must be a non-empty string or integer"
        )
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        raise DataError(f"{where(path, i, 'question')}: must be a non-empty string")
    check_answer(row, path, i, names.get("answer", "answer"))
    check_frames(row, path, i)
    check_map(row, path, i)
    check_params(row, path, i)


def check_params(row: Mapping, path: str | Path, i: int) -> None:
    """A row with a ground-truth map and a known task has ``params`` that ``solve`` can answer
    the question from over that map."""
    params = row.get("params")
    if params is not None and not isinstance(params, dict):
        raise DataError(f"{where(path, i, 'params')}: must be an object")
    if row.get("map") is None or row.get("task") not in TASKS:
        return
    if params is None:
        raise DataError(f"{where(path, i, 'params')}: is missing (a row with a map needs it)")
    try:
        solve(row["task"], params, CogMap.from_json(row["map"]))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise DataError(
            f"{where(path, i, 'params')}: do not fit task {row['task']!r} "
            f"({type(err).__name__}: {err!s:.60})"
        ) from err


def check_dataset_row(
    row: object, path: str | Path, i: int, fields: tuple[str, ...] = DATASET_FIELDS
) -> None:
    """A dataset row of this project (``dataset.make_row``): the ``fields`` present with their
    types, frames inside the folder, frame count = num_frames, a valid answer and map."""
    if not isinstance(row, dict):
        raise DataError(f"{where(path, i)}: expected an object, got {type(row).__name__}")
    for name in fields:
        if name not in row:
            raise DataError(f"{where(path, i, name)}: is missing")
    for name in ("task", "question", "prompt", "target", "answer"):
        if name in fields and not isinstance(row[name], str):
            raise DataError(
                f"{where(path, i, name)}: must be a string, got {type(row[name]).__name__}"
            )
    if "task" in fields and row["task"] not in TASKS:
        raise DataError(f"{where(path, i, 'task')}: unknown task {row['task']!r:.40}")
    check_frames(row, path, i)
    if "answer" in fields and "task" in fields:
        check_answer({**row, "kind": TASKS[row["task"]].kind}, path, i)
    check_map(row, path, i)
    if "params" in row or "map" in fields:
        check_params(row, path, i)
