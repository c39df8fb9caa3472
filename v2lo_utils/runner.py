"""The papermill runner: executes the numbered notebooks of a profile into a run folder.

    outputs/runs/<run-id>/
        01_data_inspection.ipynb ...   executed copies
        run.log                        one line per notebook: start, seconds, result
        run.json                       profile, parameters and status of every notebook

Notebooks run in order with the repository root as working directory; the first failure stops the
run and names the notebook, the cell and the error.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .profiles import load_profiles, notebook_parameters

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_RE = re.compile(r"^(\d\d)_\w+\.ipynb$")


class RunError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    notebooks: list[str]


@dataclass(frozen=True)
class Step:
    """One notebook execution: ``name`` is 'NN_stem' or 'NN_stem:variant' (a notebook run twice,
    e.g. the merge after SFT and after GRPO); profiles give each step its own parameters."""

    name: str
    path: Path

    @property
    def variant(self) -> str | None:
        return self.name.partition(":")[2] or None

    @property
    def output_name(self) -> str:
        return f"{self.path.stem}-{self.variant}.ipynb" if self.variant else self.path.name


def pipeline_steps(
    folder: Path,
    profile: dict,
    only: Sequence[str] | None = None,
    pipeline: Sequence[str] | None = None,
) -> list[Step]:
    """``pipeline``, else the profile's, else every numbered notebook once, in order; filtered by
    ``only`` (numbers, stems or step names)."""
    notebooks = {p.stem: p for p in find_notebooks(folder)}
    names = pipeline or profile.get("pipeline") or list(notebooks)
    steps = []
    for name in names:
        stem = name.partition(":")[0]
        if stem not in notebooks:
            raise RunError(f"pipeline step {name!r}: no notebook {stem}.ipynb in {folder}")
        steps.append(Step(name, notebooks[stem]))
    if only:
        wanted = set(only)
        steps = [s for s in steps if {s.name, s.path.stem, s.name[:2]} & wanted]
        if not steps:
            raise RunError(f"no pipeline step matches {', '.join(sorted(wanted))}")
    return steps


def find_notebooks(folder: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The numbered notebooks in ``folder``, in order; ``only`` keeps those whose number or stem
    is listed ('01', '02_sft')."""
    found = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_RE.match(p.name))
    if only:
        wanted = set(only)
        found = [p for p in found if p.name[:2] in wanted or p.stem in wanted]
        missing = wanted - {p.name[:2] for p in found} - {p.stem for p in found}
        if missing:
            raise RunError(f"no notebook {', '.join(sorted(missing))} in {folder}")
    return found


def parse_overrides(items: Sequence[str]) -> dict:
    """``key=value`` strings; values are read as JSON where they parse (numbers, true, lists)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RunError(f"parameter {item!r} is not key=value")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _failure(nb: Path, err: Exception, label: str | None = None) -> RunError:
    """The notebook, the failing cell (its position in the source notebook, 1-based, and its
    first line) and the error."""
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    index = getattr(err, "cell_index", None)  # counts papermill's injected parameters cell
    where = "before any cell ran"
    if index is not None:
        import nbformat

        cells = nbformat.read(nb, as_version=4).cells
        tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
        injected_at = tagged[0] + 1 if tagged else 0
        source = index - 1 if index > injected_at else index
        text = cells[source].source.strip() if 0 <= source < len(cells) else ""
        first = text.splitlines()[0] if text else ""
        where = f"cell {source + 1} ({first[:60]!r})"
    return RunError(f"notebook {label or nb.name} failed in {where}: {ename}: {evalue}")


def run_profile(
    profile: str,
    only: Sequence[str] | None = None,
    overrides: dict | None = None,
    run_id: str | None = None,
    runs_dir: str | Path = "outputs/runs",
    notebooks_dir: str | Path | None = None,
    cwd: str | Path | None = None,
    kernel_name: str = "python3",
    pipeline: Sequence[str] | None = None,
) -> RunResult:
    """Execute the profile's notebooks with papermill; raises RunError at the first failure."""
    import papermill as pm

    root = Path(cwd) if cwd is not None else REPO_ROOT
    profiles = load_profiles()
    if profile not in profiles:
        raise RunError(f"unknown profile {profile!r}; known: {', '.join(profiles)}")
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else root / "notebooks"
    steps = pipeline_steps(nb_dir, profiles[profile], only, pipeline)
    if not steps:
        raise RunError(f"no numbered notebooks in {nb_dir}")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = (root / runs_dir / (run_id or f"{stamp}-{profile}")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "run.log"
    summary: dict = {"profile": profile, "run_dir": str(run_dir), "notebooks": []}
    for step in steps:
        nb = step.path
        declared = pm.inspect_notebook(str(nb))
        params = {
            **notebook_parameters(profile, nb.stem, profiles),
            **(profiles[profile].get(step.name, {}) if step.variant else {}),
            **(overrides or {}),
        }
        params["run_dir"] = str(run_dir)
        params = {k: _fill(v, run_dir) for k, v in params.items() if k in declared}
        entry = {"notebook": step.output_name, "parameters": params, "status": "running"}
        summary["notebooks"].append(entry)
        _append(log, f"{_now()} start {step.output_name} {json.dumps(params)}")
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb),
                str(run_dir / step.output_name),
                parameters=params,
                cwd=str(root),
                kernel_name=kernel_name,
                progress_bar=False,
            )
        except Exception as err:
            failure = _failure(nb, err, step.output_name)
            entry.update(status="failed", error=str(failure), seconds=time.perf_counter() - t0)
            _append(log, f"{_now()} FAILED {failure}")
            _write_summary(run_dir, summary)
            raise failure from err
        entry.update(status="ok", seconds=round(time.perf_counter() - t0, 1))
        _append(log, f"{_now()} done {step.output_name} in {entry['seconds']} s")
        _write_summary(run_dir, summary)
    return RunResult(run_dir, [s.output_name for s in steps])


def _fill(value: object, run_dir: Path) -> object:
    """Profile strings (also inside lists and tables) may name the run folder as {run_dir}, e.g.
    the previous stage's output."""
    if isinstance(value, str):
        return value.replace("{run_dir}", str(run_dir))
    if isinstance(value, dict):
        return {k: _fill(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, run_dir) for v in value]
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "run.json").write_text(json.dumps(summary, indent=2))
