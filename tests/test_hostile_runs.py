"""Hostile runs: mistyped notebook parameters, a SIGKILLed data build, a resume with other settings."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from v2lo_utils.dataset import (
    DATA_VERSION,
    BuildConfig,
    build_qvs_bench,
    build_training_set,
    read_jsonl,
)
from v2lo_utils.errors import DataError, ParameterError, V2loError
from v2lo_utils.runner import RunError, run_profile

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# F8: -p parameters a notebook does not declare, or of another type than its default


def _notebook(path: Path, parameters: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(parameters), nbformat.v4.new_code_cell(body)]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


WRITE_PARAMS = (
    "import json, pathlib\n"
    "pathlib.Path(run_dir, 'seen.json').write_text(json.dumps({'scenes': scenes, 'lr': lr}))"
)


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(
        folder / "01_data.ipynb",
        'seed = 0\nscenes = 4\nlr = 0.1\nrun_dir = "outputs/runs/manual"',
        WRITE_PARAMS,
    )
    _notebook(
        folder / "02_train.ipynb",
        "max_steps = 200\n"
        "lr = 0.1\n"
        "flag = True\n"
        'name = "demo"\n'
        "xs = [1, 4]\n"
        'table = {"a": 1}\n'
        "anything = None\n"
        "computed = 2 * 3\n"
        'run_dir = "outputs/runs/manual"',
        "raise RuntimeError('must not run')",
    )
    return folder


def _run(tmp_path, notebooks, overrides, pipeline=("01_data", "02_train")):
    return run_profile(
        "smoke",
        overrides=overrides,
        run_id="r",
        runs_dir=tmp_path / "runs",
        notebooks_dir=notebooks,
        cwd=tmp_path,
        pipeline=list(pipeline),
    )


def test_unknown_parameter_is_refused_before_any_notebook_runs(tmp_path, notebooks):
    with pytest.raises(
        ParameterError,
        match=r"parameter 'scene': no notebook of this run declares it "
        r"\(01_data\.ipynb, 02_train\.ipynb\); did you mean 'scenes'\?",
    ) as info:
        _run(tmp_path, notebooks, {"scenes": 3, "scene": 8})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()  # no run folder, no executed copy
    with pytest.raises(ParameterError, match=r"parameter 'zzz_qq'.*02_train\.ipynb\)$"):
        _run(tmp_path, notebooks, {"zzz_qq": 1})  # no close match: no suggestion
    # declared only by a notebook this run skips
    with pytest.raises(ParameterError, match=r"'max_steps'.*\(01_data\.ipynb\)$"):
        _run(tmp_path, notebooks, {"max_steps": 5}, pipeline=["01_data"])
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_steps": "abc"}, r"'max_steps' = 'abc' \(str\): 02_train\.ipynb expects an int \("),
        ({"max_steps": 2.5}, r"'max_steps' = 2\.5 \(float\): 02_train\.ipynb expects an int"),
        ({"max_steps": True}, r"'max_steps' = True \(bool\): 02_train\.ipynb expects an int"),
        ({"lr": "fast"}, r"'lr' = 'fast' \(str\): 01_data\.ipynb expects a number"),
        ({"flag": "True"}, r"'flag' = 'True' \(str\): .*expects a bool .*write true or false"),
        ({"flag": 1}, r"'flag' = 1 \(int\): 02_train\.ipynb expects a bool"),
        ({"name": 2024}, r"'name' = 2024 \(int\): 02_train\.ipynb expects a string .*quote it"),
        ({"xs": 3}, r"'xs' = 3 \(int\): 02_train\.ipynb expects a list"),
        ({"table": [1]}, r"'table' = \[1\] \(list\): 02_train\.ipynb expects a table"),
    ],
)
def test_mistyped_parameter_is_refused_before_any_notebook_runs(
    tmp_path, notebooks, overrides, message
):
    with pytest.raises(ParameterError, match=message) as info:
        _run(tmp_path, notebooks, overrides)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()


def test_valid_parameters_still_reach_the_notebook(tmp_path, notebooks):
    # lr: an int where the default is a float; run_dir: set by the runner, allowed
    over = {"scenes": 7, "lr": 1, "run_dir": "elsewhere"}
    result = _run(tmp_path, notebooks, over, pipeline=["01_data"])
    assert json.loads((result.run_dir / "seen.json").read_text()) == {"scenes": 7, "lr": 1}
    run = json.loads((result.run_dir / "run.json").read_text())
    # profile-table parameters the notebook does not declare (image_size, data_dir) are left out
    assert run["notebooks"][0]["parameters"] == {
        "seed": 0,
        "scenes": 7,
        "lr": 1,
        "run_dir": str(result.run_dir),
    }


def test_parameters_without_a_readable_default_are_not_type_checked(tmp_path, notebooks):
    # None and a computed default accept anything; the check passes, and 02_train then fails
    with pytest.raises(RunError, match=r"02_train\.ipynb failed"):
        _run(tmp_path, notebooks, {"anything": "x", "computed": [1]}, pipeline=["02_train"])


def test_run_errors_are_project_errors():
    assert issubclass(RunError, V2loError) and issubclass(RunError, RuntimeError)
    assert issubclass(ParameterError, V2loError)


# ---------------------------------------------------------------------------------------------
# F9: a SIGKILLed build takes its pool workers along

BUILD = """
import sys
from v2lo_utils import dataset, workers
if sys.argv[2] == "poll":  # no parent-death signal: the watching thread alone must do it
    workers.PR_SET_PDEATHSIG = 0
dataset.build_training_set(sys.argv[1], dataset.BuildConfig(scenes=400, image_size=160, workers=2))
"""


@pytest.mark.parametrize("mechanism", ["prctl", "poll"])
def test_killed_build_leaves_no_workers(tmp_path, mechanism):
    out = tmp_path / "d"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILD, str(out), mechanism],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[psutil.Process] = []
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        # the workers run (their initializer has run) once they have written a shard
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the build ended before it could be killed"
            workers = parent.children(recursive=True)
            if len(workers) >= 2 and any((out / "shards").glob("*.jsonl")):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the build started no workers in 60 s")
        workers = parent.children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)  # not reaped yet: the parent stays a zombie a while
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"workers outlived the killed build: {[p.pid for p in alive]}"
        shards = len(list((out / "shards").glob("*.jsonl")))
        time.sleep(1)
        assert len(list((out / "shards").glob("*.jsonl"))) == shards  # nobody writes any more
    finally:
        for p in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.kill()
        proc.wait()


def test_pool_build_still_works(tmp_path):
    counts = build_training_set(tmp_path, BuildConfig(scenes=3, seed=1, image_size=32, workers=2))
    assert counts["train"] > 0
    assert len(list((tmp_path / "shards").glob("*.jsonl"))) == 3


# ---------------------------------------------------------------------------------------------
# F6: a resumed build with other settings would mix frames and rows of both


def test_resume_with_other_settings_is_refused(tmp_path):
    cfg = BuildConfig(scenes=1, seed=4, image_size=32, workers=1)
    build_training_set(tmp_path, cfg)
    stamp = json.loads((tmp_path / "build.json").read_text())
    assert stamp["settings"]["image_size"] == 32
    assert "workers" not in stamp["settings"] and "scenes" not in stamp["settings"]
    other = BuildConfig(scenes=1, seed=4, image_size=48, workers=1)
    with pytest.raises(DataError, match=r"other settings \(image_size 32 -> 48\).*another folder"):
        build_training_set(tmp_path, other)
    several = BuildConfig(scenes=1, seed=5, image_size=32, frame_counts=(1, 4), workers=1)
    with pytest.raises(
        DataError, match=r"frame_counts \[1, 4, 8, 12, 16\] -> \[1, 4\]; seed 4 -> 5\)"
    ) as info:
        build_training_set(tmp_path, several)
    assert "\n" not in str(info.value)
    assert json.loads((tmp_path / "build.json").read_text()) == stamp  # refused: nothing changed
    # the same settings with other workers and more scenes resume
    more = BuildConfig(scenes=2, seed=4, image_size=32, workers=2)
    counts = build_training_set(tmp_path, more)
    rows = read_jsonl(tmp_path / "train.jsonl") + read_jsonl(tmp_path / "val.jsonl")
    assert len(rows) == counts["train"] + counts["val"]
    assert {r["scene_id"] for r in rows} == {"train4-s00000", "train4-s00001"}


def test_resume_of_a_stamp_without_settings_is_refused(tmp_path):
    cfg = BuildConfig(scenes=1, seed=4, image_size=32, workers=1)
    build_training_set(tmp_path, cfg)
    stamp = {"kind": "training", "data_version": DATA_VERSION}
    (tmp_path / "build.json").write_text(json.dumps(stamp))
    with pytest.raises(DataError, match=r"does not record its settings .*delete it"):
        build_training_set(tmp_path, cfg)
    (tmp_path / "build.json").write_text("{oops")
    with pytest.raises(DataError, match=r"build\.json: not valid JSON"):
        build_training_set(tmp_path, cfg)


def test_qvs_resume_ignores_training_settings(tmp_path):
    cfg = BuildConfig(scenes=3, seed=0, image_size=32, questions=5, qvs_group=5, workers=1)
    assert build_qvs_bench(tmp_path, cfg) == 5
    # scenes, frame counts and val fraction do not change QVS rows: the same folder resumes
    same = BuildConfig(scenes=9, seed=0, image_size=32, questions=5, qvs_group=5, val_fraction=0.5)
    assert build_qvs_bench(tmp_path, same) == 5
    with pytest.raises(DataError, match=r"questions 5 -> 10"):
        build_qvs_bench(tmp_path, BuildConfig(seed=0, image_size=32, questions=10, qvs_group=5))
