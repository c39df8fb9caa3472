"""The papermill runner: executes the numbered notebooks of a profile into a run folder.

    outputs/runs/<run-id>/
        01_data_inspection.ipynb ...   executed copies
        run.log                        one line per notebook: start, seconds, result
        run.json                       profile, parameters and status of every notebook

Notebooks run in order with the repository root as working directory; the first failure stops the
run and names the notebook, the cell and the error.
"""

from __future__ import annotations

import ast
import json
import re
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import ParameterError, V2loError, did_you_mean
from .profiles import load_profiles, notebook_parameters
from .runs import PIPELINE, PIPELINES

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_RE = re.compile(r"^(\d\d)_\w+\.ipynb$")


class RunError(V2loError, RuntimeError):
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
    """``pipeline``, else the profile's, else the standard one (:data:`~v2lo_utils.runs.PIPELINE`),
    each a list of steps or a name in :data:`~v2lo_utils.runs.PIPELINES`; filtered by ``only``
    (numbers, stems or step names)."""
    notebooks = {p.stem: p for p in find_notebooks(folder)}
    names = pipeline or profile.get("pipeline") or PIPELINE
    if isinstance(names, str):
        if names not in PIPELINES:
            raise RunError(
                f"no pipeline named {names!r}: {', '.join(PIPELINES)} or a list of steps"
            )
        names = PIPELINES[names]
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


# the runner sets these itself; a user's value is accepted (and replaced)
RUNNER_PARAMETERS = frozenset({"run_dir"})

_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a bool (true or false)"),
    (int, "an int"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (tuple, "a list"),
    (dict, "a table (JSON object)"),
)


def _default_value(source: object) -> object:
    """A notebook parameter's default (papermill gives its source text), or None when it cannot
    be read as a literal."""
    if not isinstance(source, str):
        return None
    try:
        return ast.literal_eval(source.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _fits(value: object, default: object) -> tuple[bool, str]:
    """Whether ``value`` has the type of ``default`` (an int counts as a float; a bool is no int);
    with the expected type's name. Defaults of another kind (or None) accept anything."""
    for kind, name in _KINDS:
        if isinstance(default, kind):
            if kind is bool:
                return isinstance(value, bool), name
            if isinstance(value, bool):
                return False, name
            if kind is float:
                return isinstance(value, int | float), name
            if kind in (list, tuple):
                return isinstance(value, list | tuple), name
            return isinstance(value, kind), name
    return True, ""


def check_overrides(overrides: dict, declared: dict[str, dict]) -> None:
    """Refuse a user parameter that no notebook of the run declares, or whose value does not have
    the type of a declaring notebook's default. ``declared``: notebook file name -> papermill's
    ``inspect_notebook`` answer. Raises ParameterError naming the parameter and the notebooks."""
    names = sorted({p for params in declared.values() for p in params})
    for key, value in overrides.items():
        if key in RUNNER_PARAMETERS:
            continue
        owners = [nb for nb, params in declared.items() if key in params]
        if not owners:
            raise ParameterError(
                f"parameter {key!r}: no notebook of this run declares it "
                f"({', '.join(declared)}){did_you_mean(key, names)}"
            )
        for nb in owners:
            source = declared[nb][key].get("default")
            ok, expected = _fits(value, _default_value(source))
            if not ok:
                hint = ""
                if isinstance(value, str) and expected.startswith("a bool"):
                    hint = "; write true or false"
                elif expected == "a string" and isinstance(value, int | float):
                    hint = f"; to pass text that reads as JSON, quote it: -p '{key}=\"{value}\"'"
                raise ParameterError(
                    f"parameter {key!r} = {value!r} ({type(value).__name__}): {nb} expects "
                    f"{expected} (its default is {source}){hint}"
                )


def check_profile(name: str, profile: dict, declared: dict[str, dict]) -> None:
    """Refuse a profile parameter its notebook does not declare (a misspelling in profiles.toml
    would otherwise be dropped silently): each key of a ``[<profile>."NN_name"]`` table must be a
    parameter of that notebook, each ``common`` key of at least one. ``declared``: notebook stem
    -> papermill's ``inspect_notebook`` answer; tables of notebooks not in it are not checked."""
    every = {p for params in declared.values() for p in params}
    for table, values in profile.items():
        if not isinstance(values, dict):
            continue  # description, pipeline
        stem = table.partition(":")[0]
        if table != "common" and stem not in declared:
            continue
        known = every if table == "common" else set(declared[stem])
        for key in values:
            if key not in known:
                raise ParameterError(
                    f"profiles.toml: [{name}.{table!r}] sets {key!r}, which "
                    f"{'no notebook' if table == 'common' else stem} declares"
                    f"{did_you_mean(key, known)}"
                )


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
    declared = {p: pm.inspect_notebook(str(p)) for p in dict.fromkeys(s.path for s in steps)}
    check_overrides(overrides or {}, {p.name: d for p, d in declared.items()})
    if pipeline is None:  # the profile's own pipeline: its tables must fit its notebooks
        every = {s.path for s in pipeline_steps(nb_dir, profiles[profile])}
        known = {p.stem: declared.get(p) or pm.inspect_notebook(str(p)) for p in every}
        check_profile(profile, profiles[profile], known)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = (root / runs_dir / (run_id or f"{stamp}-{profile}")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "run.log"
    summary = _read_summary(run_dir, profile)
    for step in steps:
        nb = step.path
        params = {
            **notebook_parameters(profile, nb.stem, profiles),
            **(profiles[profile].get(step.name, {}) if step.variant else {}),
            **(overrides or {}),
        }
        params["run_dir"] = str(run_dir)
        if step.variant and "stage" in declared[nb]:  # 04_merge:sft merges the sft stage
            params.setdefault("stage", step.variant)
        params = {k: _fill(v, run_dir) for k, v in params.items() if k in declared[nb]}
        entry = {"notebook": step.output_name, "parameters": params, "status": "running"}
        kept = [e for e in summary["notebooks"] if e.get("notebook") != step.output_name]
        summary["notebooks"] = [*kept, entry]  # a rerun replaces that notebook's entry
        _append(log, f"{_now()} start {step.output_name} {json.dumps(params)}")
        _write_summary(run_dir, summary)  # a killed run still shows the step it was in
        t0 = time.perf_counter()
        try:
            with _signals_interrupt():
                pm.execute_notebook(
                    str(nb),
                    str(run_dir / step.output_name),
                    parameters=params,
                    cwd=str(root),
                    kernel_name=kernel_name,
                    progress_bar=False,
                )
        except KeyboardInterrupt as err:
            entry.update(status="interrupted", seconds=round(time.perf_counter() - t0, 1))
            why = str(err) or "Ctrl-C"
            _append(log, f"{_now()} INTERRUPTED {step.output_name} ({why}); earlier steps kept")
            _write_summary(run_dir, summary)
            raise
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


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a step as Ctrl-C does (KeyboardInterrupt): the runner records it
    as interrupted, and papermill shuts its kernel down (signal handlers: main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


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


def _read_summary(run_dir: Path, profile: str) -> dict:
    """run.json of a run folder: the earlier steps' entries when the folder has one (``--only``
    reruns and later stages keep them), else a new summary."""
    fresh = {"profile": profile, "run_dir": str(run_dir), "notebooks": []}
    try:
        old = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return fresh
    if not isinstance(old, dict) or not isinstance(old.get("notebooks"), list):
        return fresh
    return {**fresh, "notebooks": [e for e in old["notebooks"] if isinstance(e, dict)]}


def _write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "run.json").write_text(json.dumps(summary, indent=2))
