"""Project hygiene: CI wiring, pins, committed notebooks without outputs."""

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "make test" in (ROOT / "README.md").read_text()


def test_core_dependencies_are_pinned():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(d.split("==") for d in deps)
    assert (
        pins["torch"] == "2.13.0" and pins["trl"] == "1.13.0" and pins["transformers"] == "5.17.0"
    )
    assert "torch==2.13.0" in (ROOT / "environment.yml").read_text()


def _tracked_notebooks():
    try:
        out = subprocess.run(
            ["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out]


def test_committed_notebooks_have_no_outputs():
    for path in _tracked_notebooks():
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{path.name}: cell {i} has outputs"
                assert cell.get("execution_count") is None, f"{path.name}: cell {i} has a count"


def test_project_root_is_found_from_notebooks(tmp_path, monkeypatch):
    from v2lo_utils.paths import at_project_root, project_root

    assert project_root(ROOT / "notebooks") == ROOT
    assert project_root(tmp_path) == tmp_path.resolve()  # no project above: stay
    monkeypatch.chdir(ROOT / "notebooks")
    assert at_project_root() == ROOT and Path.cwd() == ROOT


def test_modules_import_only_their_layer_or_below():
    """The layer map of the package docstring holds: no module imports from a layer above its own
    (lazy imports inside functions count too), and every module is on the map."""
    import ast
    import re

    import v2lo_utils

    layers = {}
    for level, names in re.findall(r"layer (\d) \w+: ([\w ]+)", v2lo_utils.__doc__):
        layers |= dict.fromkeys(names.split(), int(level))
    package = Path(v2lo_utils.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert modules == set(layers), f"not on the map: {modules ^ set(layers)}"
    upward = []
    for name in sorted(modules):
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                target = node.module.split(".")[0]
                if layers[target] > layers[name]:
                    upward.append(f"{name} (layer {layers[name]}) imports {target}")
    assert not upward, upward


def test_grpo_is_measured_on_the_rows_sft_was(tmp_path):
    from v2lo_utils.runs import RunFolder, held_out_rows

    rows = [{"id": f"r{i}", "num_frames": 1 + i % 16} for i in range(40)]
    splits = {"train": rows[:20], "val": rows[20:]}
    run = RunFolder(tmp_path)
    first = run.held_out(splits, 5, max_frames=16)
    assert first == held_out_rows(splits, 5, 16) and len(first) == 5
    assert all(r in splits["val"] for r in first)
    run.write_metrics("sft", {"eval_ids": [r["id"] for r in first]})
    assert run.held_out(splits, 5, max_frames=4) == first  # GRPO keeps SFT's rows
    assert run.model("sft_merged") == str(tmp_path / "sft_merged") and run.model("tiny") == "tiny"
    assert run.model("grpo_map_merged") == str(tmp_path / "grpo_map_merged")
    settings = {"weights": "ab12", "backend": "auto", "ids": ["r1"], "sampling": [4, 1.0, 300]}
    assert run.measured_before(settings) is None
    run.write_metrics("grpo", {"before": {"mean_reward": 0.4}, "before_settings": settings})
    assert run.measured_before(settings) == {"mean_reward": 0.4}
    assert run.measured_before({**settings, "weights": "cd34"}) is None  # other weights
