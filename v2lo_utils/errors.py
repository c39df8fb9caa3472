"""The project's error types, one per layer; each message says where: file, row or line, field.

    V2loError            base: the CLI prints its message as one line and exits 2
      DataError          a dataset, benchmark or scene file that does not hold what it must
      ModelFolderError   a model folder that cannot be loaded (missing or corrupt files)
      PredictionsError   a predictions file that cannot be scored or resumed
      ParameterError     a parameter (profile, notebook, command line) that is unknown or mistyped

Pure: imports nothing of the project.
"""

from __future__ import annotations

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
