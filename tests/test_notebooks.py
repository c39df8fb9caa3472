"""Headless notebooks (papermill through the runner), the runner's failure report, the explorer."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from v2lo_utils.dataset import BuildConfig, Dataset, build_training_set
from v2lo_utils.explorer import Explorer, PredictionBrowser
from v2lo_utils.profiles import load_profiles
from v2lo_utils.runner import RunError, find_notebooks, parse_overrides, pipeline_steps, run_profile
from v2lo_utils.runs import PIPELINE

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_documents(path):
    raw = json.loads(path.read_text())
    assert all("id" in c for c in raw["cells"]), "every cell needs an id (nbformat 4.5)"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    code = [c for c in nb.cells if c.cell_type == "code"]
    steps = [c for c in code if c is not tagged[0]]
    assert len(code) <= 12 and all(len(c.source.splitlines()) <= 15 for c in steps)


def test_pipeline_runs_headless_under_smoke(tmp_path):
    over = {"data_dir": str(tmp_path / "train"), "qvs_dir": str(tmp_path / "qvs")}
    result = run_profile("smoke", overrides=over, run_id="t", runs_dir=tmp_path / "runs")
    run = json.loads((result.run_dir / "run.json").read_text())
    names = [
        "01_data_inspection.ipynb",
        "02_sft.ipynb",
        "04_merge-sft.ipynb",
        "03_grpo.ipynb",
        "04_merge-grpo.ipynb",
        "03_grpo-grpo_map.ipynb",
        "04_merge-grpo_map.ipynb",
        "05_qvs_bench_analysis.ipynb",
    ]  # SFT -> merge -> GRPO -> merge, GRPO with the map reward -> merge
    assert [n["notebook"] for n in run["notebooks"]] == names
    assert all(n["status"] == "ok" for n in run["notebooks"])
    assert all((result.run_dir / n).is_file() for n in names)
    assert run["notebooks"][0]["parameters"]["scenes"] == 4  # from profiles.toml
    executed = nbformat.read(result.run_dir / "01_data_inspection.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"]
    plotly = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plotly) >= 6
    metrics = json.loads((result.run_dir / "01_data_metrics.json").read_text())
    assert metrics["qvs"]["qvs"]["rows"] == 20 and metrics["train"]["train"]["rows"] > 0
    sft = json.loads((result.run_dir / "02_sft_metrics.json").read_text())
    assert sft["train"]["global_step"] == 4 and sft["before"]["n"] == sft["after"]["n"] == 2
    assert Path(sft["model_dir"], "model.safetensors").is_file()
    merge_sft = json.loads((result.run_dir / "04_merge_sft_metrics.json").read_text())
    assert merge_sft["parity_ok"] and not merge_sft["merged"]  # SFT trained in full: re-saved
    grpo = json.loads((result.run_dir / "03_grpo_metrics.json").read_text())
    assert grpo["train"]["global_step"] == 2 and grpo["before"]["n"] == grpo["after"]["n"] == 2
    merge_grpo = json.loads((result.run_dir / "04_merge_grpo_metrics.json").read_text())
    assert merge_grpo["parity_ok"] and merge_grpo["merged"]  # GRPO's LoRA adapter merged
    assert merge_grpo["base"] == merge_sft["out_dir"]  # each stage read the previous one's output
    grpo_map = json.loads((result.run_dir / "03_grpo_map_metrics.json").read_text())
    assert grpo_map["train"]["global_step"] == 2 and grpo_map["eval_ids"] == grpo["eval_ids"]
    assert grpo_map["before"] == grpo["before"]  # the same SFT model, measured once
    assert (result.run_dir / "grpo_map" / "final").is_dir()
    executed = nbformat.read(result.run_dir / "03_grpo-grpo_map.ipynb", as_version=4)
    injected = next(
        c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])
    )
    assert (
        'stage = "grpo_map"' in injected.source
        and 'map_reward_kind = "placement"' in injected.source
    )
    merge_map = json.loads((result.run_dir / "04_merge_grpo_map_metrics.json").read_text())
    assert merge_map["parity_ok"] and merge_map["base"] == merge_sft["out_dir"]
    qvs = json.loads((result.run_dir / "05_qvs_metrics.json").read_text())
    assert set(qvs["summaries"]) == {
        "blind baseline",
        "question-only baseline",
        "before SFT",
        "after GRPO",
        "after GRPO, map reward",
    }
    assert qvs["summaries"]["after GRPO"]["counts"]["questions"] == 20
    assert qvs["diagnostics"]["ground_truth"]["overall"] == 1.0
    # what reading the camera's motion is worth, from the same rows and training set
    from v2lo_utils.baselines import cue_priors_by_group
    from v2lo_utils.dataset import Dataset, later_objects

    train_ds = Dataset.load(tmp_path / "train")
    fit = later_objects(train_ds, train_ds.rows["train"])
    qvs_ds = Dataset.load(tmp_path / "qvs")
    cues = cue_priors_by_group(fit, later_objects(qvs_ds, qvs_ds.rows["qvs"][:20]))
    assert cues and qvs["later_cues"] == json.loads(json.dumps(cues))
    preds = (result.run_dir / "predictions" / "after_grpo.jsonl").read_text().splitlines()
    assert len(preds) == 20
    # the controls: the same questions with another scene's frames, in every evaluation
    from v2lo_utils.benchmark import swap_frames
    from v2lo_utils.loaders import load_benchmark

    swappable = swap_frames(load_benchmark(tmp_path / "qvs")[:20], strict=False)
    swapped = (result.run_dir / "predictions" / "after_grpo__swapped_frames.jsonl").read_text()
    assert len(swapped.splitlines()) == len(swappable) > 0
    assert set(qvs["summaries"]["after GRPO"]["controls"]["swapped"]) == {"1-4", "8-16", "all"}
    for stage in (sft, grpo, grpo_map):
        assert set(stage["after"]["controls"]) == {"swapped", "question_only"}
        assert "r_x" in stage["after"] and "consistency" in stage["after"]
    # the report is built from this run's metrics files, not from constants
    report = (result.run_dir / "report.html").read_text()
    assert "QVS-Bench-Sim" in report and "plotly" in report
    assert "after SFT: 4 steps in" in report
    assert "SFT + GRPO, map reward: held-out paper reward, greedy" in report
    assert "after GRPO: better than SFT? " in report  # the smoke profile evaluates GRPO only
    assert all(f"The objects only later frames show, {g} frames" in report for g in cues)
    sft["after"]["format_rate"] = 0.123456
    (result.run_dir / "02_sft_metrics.json").write_text(json.dumps(sft))
    from v2lo_utils.report import qvs_report

    qvs_report(result.run_dir, {}, qvs["diagnostics"], [])
    assert "0.123456" in (result.run_dir / "report.html").read_text()


def runner_notebook(*sources: str):
    """A notebook whose tagged parameters cell declares ``run_dir``, then ``sources``' cells."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ("run_dir = ''", *sources)]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def test_runner_names_the_failing_notebook_and_cell(tmp_path):
    nb = runner_notebook("x = 1", "1 / 0")
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "01_broken.ipynb")
    nbformat.write(nb, tmp_path / "nbs" / "02_never.ipynb")
    with pytest.raises(
        RunError, match=r"01_broken\.ipynb failed in cell 3 \('1 / 0'\): ZeroDivisionError"
    ):
        run_profile(
            "smoke",
            notebooks_dir=tmp_path / "nbs",
            run_id="r",
            runs_dir=tmp_path / "runs",
            pipeline=["01_broken", "02_never"],
        )
    run = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
    assert [n["notebook"] for n in run["notebooks"]] == ["01_broken.ipynb"]  # the run stopped there
    assert "ZeroDivisionError" in (tmp_path / "runs" / "r" / "run.log").read_text()
    nb.cells = nb.cells[:2]  # mended: a later call into the same run keeps the earlier entries
    nbformat.write(nb, tmp_path / "nbs" / "03_ok.ipynb")
    run_profile("smoke", notebooks_dir=tmp_path / "nbs", run_id="r", runs_dir=tmp_path / "runs",
                pipeline=["03_ok"])  # fmt: skip
    run = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
    assert [(n["notebook"], n["status"]) for n in run["notebooks"]] == [
        ("01_broken.ipynb", "failed"),
        ("03_ok.ipynb", "ok"),
    ]


def test_a_killed_run_records_its_step_and_leaves_no_kernel(tmp_path):
    nb = runner_notebook(
        "import os, pathlib, time\n"
        "pathlib.Path(run_dir, 'kernel.pid').write_text(str(os.getpid()))\n"
        "time.sleep(300)"
    )
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "01_slow.ipynb")
    code = (
        "from v2lo_utils.runner import run_profile\n"
        f"run_profile('smoke', notebooks_dir={str(tmp_path / 'nbs')!r}, run_id='r', "
        f"runs_dir={str(tmp_path / 'runs')!r}, pipeline=['01_slow'])"
    )
    runner = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE)
    pid_file, deadline = tmp_path / "runs" / "r" / "kernel.pid", time.monotonic() + 120
    while not pid_file.exists() and runner.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pid_file.exists(), runner.stderr.read().decode()[-2000:]
    time.sleep(0.5)  # the pid is written; the write may not be complete
    kernel = int(pid_file.read_text())
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(60) != 0 and b"KeyboardInterrupt: SIGTERM" in runner.stderr.read()

    def alive(pid: int) -> bool:  # a zombie (ended, not yet reaped) counts as ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    for _ in range(100):  # the kernel ends with the runner
        if not alive(kernel):
            break
        time.sleep(0.1)
    assert not alive(kernel)
    run = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
    assert [(n["notebook"], n["status"]) for n in run["notebooks"]] == [
        ("01_slow.ipynb", "interrupted")
    ]
    assert (
        "INTERRUPTED 01_slow.ipynb (SIGTERM)" in (tmp_path / "runs" / "r" / "run.log").read_text()
    )


def test_runner_arguments(tmp_path):
    assert parse_overrides(["scenes=3", "data_dir=out/x", "flag=true", "xs=[1, 2]"]) == {
        "scenes": 3,
        "data_dir": "out/x",
        "flag": True,
        "xs": [1, 2],
    }
    with pytest.raises(RunError, match="not key=value"):
        parse_overrides(["scenes"])
    with pytest.raises(RunError, match="no notebook 09"):
        find_notebooks(ROOT / "notebooks", ["09"])
    with pytest.raises(RunError, match=r"pipeline step '07_eval': no notebook 07_eval\.ipynb"):
        pipeline_steps(ROOT / "notebooks", {"pipeline": ["01_data_inspection", "07_eval"]})
    steps = pipeline_steps(ROOT / "notebooks", load_profiles()["smoke"], only=["04"])
    merges = ["04_merge-sft.ipynb", "04_merge-grpo.ipynb", "04_merge-grpo_map.ipynb"]
    assert [s.output_name for s in steps] == merges
    paper = [s.name for s in pipeline_steps(ROOT / "notebooks", load_profiles()["paper"])]
    assert paper == list(PIPELINE) and "03_grpo:grpo_map" not in paper
    with pytest.raises(RunError, match="no pipeline named 'mapreward': paper, map_reward"):
        pipeline_steps(ROOT / "notebooks", {"pipeline": "mapreward"})
    with pytest.raises(RunError, match="unknown profile"):
        run_profile("huge", runs_dir=tmp_path)


def test_explorer_follows_its_controls(tmp_path):
    build_training_set(tmp_path, BuildConfig(scenes=3, seed=1, image_size=64, workers=1))
    ex = Explorer(Dataset.load(tmp_path))
    ex.task.value = "object_count"  # asked at every frame count (its answer is the scene truth)
    assert set(ex.frames.options) == {1, 4, 8, 12, 16}
    seen = {}
    for k in ex.frames.options:
        ex.frames.value = k
        row = ex.current
        assert row["num_frames"] == k and row["scene_id"] == ex.scene.value
        fig = ex.figure(row)
        scene, hidden = ex.ds.hidden_objects(row)
        assert len(fig.layout.shapes) == len(scene.objects)  # one shape per object
        seen[k] = sum(s.line.dash == "dot" for s in fig.layout.shapes) == len(hidden)
    assert all(seen.values())
    assert len({len(ex.ds.hidden_objects(r)[1]) for r in rows_of(ex)}) > 1  # frames matter
    before = ex.current["id"]
    ex.task.value = next(t for t in ex.task.options if t != ex.task.value)
    assert ex.current["id"] != before and ex.current["task"] == ex.task.value
    # the widgets hold the current row's figures, set from the kernel (no output capture)
    (shown,) = plotly_outputs(ex.map_out)
    assert shown["layout"]["title"]["text"] == ex.figure(ex.current).layout.title.text
    assert len(plotly_outputs(ex.frames_out)) == 1


def plotly_outputs(out) -> list[dict]:
    """The plotly figures an ``ipywidgets.Output`` holds (its display_data bundles)."""
    assert all(o["output_type"] == "display_data" for o in out.outputs), out.outputs
    return [o["data"]["application/vnd.plotly.v1+json"] for o in out.outputs]


def test_prediction_browser_shows_the_picked_row(tmp_path):
    build_training_set(tmp_path, BuildConfig(scenes=2, seed=3, image_size=64, workers=1))
    rows = Dataset.load(tmp_path).rows["train"][:3]
    completions = ["<think>no map</think><answer>A</answer>", "", rows[2]["target"]]
    browser = PredictionBrowser(tmp_path, rows, completions)
    for i, status in [(0, "no parseable map"), (2, "parsed")]:
        browser.pick.value = i
        frames, pred = plotly_outputs(browser.out)
        assert pred["layout"]["title"]["text"].startswith(f"{rows[i]['id']}: ")
        assert status in pred["layout"]["title"]["text"]
        assert sum(t.get("type") == "image" for t in frames["data"]) == len(rows[i]["frames"])


def rows_of(ex):
    """The explorer's rows for its current scene, clip and task, one per frame count."""
    return [ex.index[(ex.scene.value, ex.clip.value, ex.task.value, k)] for k in ex.frames.options]


def test_notebooks_run_in_file_order_with_their_defaults(tmp_path):
    """What a person does in JupyterLab: the notebooks as committed, default parameters, top to
    bottom in file order, each one's defaults reading what the one before wrote (01 builds the
    data, 02 trains into outputs/runs/manual/sft, 03 starts from its final model, 04 merges
    GRPO's adapter, 05 evaluates the merged model, 06 trains the smoke ablation's variants). Run by nbval in a scratch copy of the
    project, so that a user's own outputs/runs/manual is never touched."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax"]
    done = subprocess.run(
        [*cmd, "notebooks/"], cwd=tmp_path, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
    assert (tmp_path / "outputs/runs/manual/report.html").is_file()
    assert "| verdict |" in (tmp_path / "outputs/runs/manual/ablation_claims.md").read_text()


def test_every_profile_parameter_is_declared_by_its_notebook():
    import papermill as pm

    from v2lo_utils.errors import ParameterError
    from v2lo_utils.runner import check_profile

    declared = {p.stem: pm.inspect_notebook(str(p)) for p in find_notebooks(ROOT / "notebooks")}
    for name, profile in load_profiles().items():
        check_profile(name, profile, declared)  # raises on a misspelled key
    broken = {"02_sft": {"learning_rat": 0.1}}
    with pytest.raises(ParameterError, match=r"'learning_rat'.*did you mean 'learning_rate'"):
        check_profile("demo", broken, declared)
