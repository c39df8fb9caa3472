"""Where relative paths in notebook parameters point: the project folder.

Papermill runs the notebooks with the project folder as working directory; JupyterLab starts
kernels in the notebook's own folder. :func:`at_project_root` makes both the same.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder (from ``start``, default the working directory, upwards) holding both
    pyproject.toml and notebooks/; ``start`` itself when there is none."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return here


def at_project_root() -> Path:
    """Change the working directory to :func:`project_root` and return it."""
    root = project_root()
    os.chdir(root)
    return root
