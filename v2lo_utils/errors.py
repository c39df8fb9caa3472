"""The project's error types, one per layer; each message says where: file, row or line, field.

    V2loError            base: the CLI prints its message as one line and exits 2
      DataError          a dataset, benchmark or scene file that does not hold what it must
      ModelFolderError   a model folder that cannot be loaded (missing or corrupt files)
      PredictionsError   a predictions file that cannot be scored or resumed
      ParameterError     a parameter (profile, notebook, command line) that is unknown or mistyped

Pure: imports nothing of the project.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class V2loError(Exception):
    """An error in the user's input or set-up; its message names the place and what is wrong."""


class DataError(V2loError, ValueError):
    """A dataset or benchmark file that does not hold what it must; the message says where."""


class ModelFolderError(V2loError, ValueError):
    """A model folder that is missing, incomplete or corrupt; the message names the file."""


class PredictionsError(V2loError, ValueError):
    """A predictions file that cannot be scored or resumed (none matches, made for other input)."""


class ParameterError(V2loError, ValueError):
    """An unknown or mistyped parameter; the message names it and what was expected."""


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'scenes'?"`` for the known name closest to a misspelled one, else ""."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def where(
    path: str | Path | None, row: int | None = None, field: str | None = None, unit: str = "row"
) -> str:
    """``"file: row 3: field 'answer'"``: the place prefix every message starts with."""
    parts = [str(path)] if path is not None else []
    if row is not None:
        parts.append(f"{unit} {row}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ": ".join(parts)
