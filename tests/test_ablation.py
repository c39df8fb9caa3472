"""The ablation: target forms, the variants' training rows, the claims' statistics, a smoke run
that resumes without retraining."""

import json
from pathlib import Path

import pytest

from v2lo_utils.ablation import VARIANTS, Job, plan, sft_params
from v2lo_utils.claims import claims_table, compare, frames_effect, paired_effect, verdict
from v2lo_utils.cogmap import CogMap
from v2lo_utils.dataset import Dataset
from v2lo_utils.errors import DataError
from v2lo_utils.profiles import load_profiles, recipe_parameters
from v2lo_utils.prompting import INSTRUCTION, form_instruction
from v2lo_utils.questions import solve
from v2lo_utils.sft import training_rows
from v2lo_utils.targets import FORMS, form_row


def test_forms_build_the_right_targets(tiny_workspace):
    rows = Dataset.load(tiny_workspace / "data").rows["train"]
    tasks = {}
    for row in rows:
        tasks.setdefault(row["task"], row)
    assert {"object_size", "min_distance", "relative_direction"} <= set(tasks)
    for row in tasks.values():
        question = row["prompt"][len(INSTRUCTION) :]
        think_answer = row["target"][row["target"].index("<think>") :]
        answer = row["target"][row["target"].index("<answer>") :]
        for form in FORMS:
            out = form_row(row, form)
            assert out["prompt"] == form_instruction(form) + question
            assert row["target"].startswith("<map>")  # the source row is left as it was
        assert form_row(row, "metric") == row
        grid = form_row(row, "grid")["target"]
        assert grid.startswith("<map>Establish a 10 x 10 grid of ") and '"cell": [' in grid
        assert '"bbox"' not in grid
        assert grid.count('"object_name"') == row["target"].count('"object_name"')
        assert form_row(row, "no_map")["target"] == think_answer
        assert not think_answer.startswith("<map>") and "<map>" not in think_answer
        assert form_row(row, "answer_only")["target"] == answer
        assert answer.startswith("<answer>") and "<think>" not in answer
    size = form_row(tasks["object_size"], "grid")["target"]
    assert size.endswith("<answer>0.00</answer>")  # a cell has no size: what the grid loses
    rel = tasks["relative_direction"]
    grid_map = CogMap.from_json(rel["map"]).to_grid(10, tuple(rel["map_extent"]))
    expected = solve(rel["task"], rel["params"], grid_map)
    assert form_row(rel, "grid")["target"].endswith(f"<answer>{expected}</answer>")
    assert "20 x 20" in form_row(rel, "grid", grid=20)["prompt"]


def test_forms_name_the_row_and_field_of_bad_input(tiny_workspace):
    row = Dataset.load(tiny_workspace / "data").rows["train"][0]
    with pytest.raises(DataError, match=rf"row {row['id']}: field 'prompt'"):
        form_row({**row, "prompt": "What is where?"}, "no_map")
    with pytest.raises(DataError, match=rf"row {row['id']}: field 'target': no <think>"):
        form_row({**row, "target": "<answer>A</answer>"}, "no_map")
    with pytest.raises(ValueError, match="unknown target form 'polar'"):
        form_row(row, "polar")


def test_each_variant_trains_its_form_at_the_same_budget(tiny_workspace):
    """The ablation profile's variants: the demo's SFT parameters at equal steps, each in its
    form; the 1-4-frame variant drops the longer rows the recipe keeps some of."""
    table = load_profiles()["ablation"]["06_ablation"]
    stages = recipe_parameters("demo", table["overrides"], data_dir=str(tiny_workspace / "data"))
    stages["02_sft"]["model_cache"] = str(tiny_workspace / "models")
    cfg = {"sft": stages["02_sft"], "grpo": stages["03_grpo"], "out_dir": "x", "grid_size": 10}
    ds = Dataset.load(tiny_workspace / "data")
    seen = {}
    for variant in table["variants"]:
        if VARIANTS[variant].grpo_from:
            continue
        p = sft_params(cfg, Job(variant, 1))
        assert (p.max_steps, p.seed, p.target_form) == (600, 1, VARIANTS[variant].form)
        assert p.output_dir == f"x/{variant}/seed1/sft"
        seen[variant] = training_rows(p, ds)
    assert all(r["target"].startswith("<map>Establish a bird") for r in seen["metric"])
    assert all('"cell": [' in r["target"] for r in seen["grid"])
    assert all(r["target"].startswith("<think>") for r in seen["no_map"])
    assert all(r["target"].startswith("<answer>") for r in seen["answer_only"])
    assert all(r["prompt"].startswith(form_instruction("answer_only")) for r in seen["answer_only"])
    assert max(r["num_frames"] for r in seen["metric"]) > 4  # the demo's long_fraction 0.15
    assert max(r["num_frames"] for r in seen["metric_1to4"]) <= 4
    ids = [r["id"] for r in seen["metric"]]
    assert [r["id"] for r in seen["grid"]] == [r["id"] for r in seen["answer_only"]] == ids


def test_plan_runs_grpo_after_its_sft_and_refuses_what_it_cannot_run():
    jobs = plan(["metric_grpo", "metric", "grid"], [0, 1])
    names = [j.name for j in jobs]
    assert names == [
        "metric/seed0",
        "grid/seed0",
        "metric/seed1",
        "grid/seed1",
        "metric_grpo/seed0",
        "metric_grpo/seed1",
    ]
    with pytest.raises(ValueError, match="starts from 'metric'"):
        plan(["metric_grpo"], [0])
    with pytest.raises(ValueError, match="unknown ablation variants"):
        plan(["polar"], [0])


def _results(variant, scores_by_seed, frames=None, placement=None):
    return [
        {
            "variant": variant,
            "seed": s,
            "steps": 10,
            "records": [
                {
                    "id": f"q{i}",
                    "task": "min_distance" if i % 2 else "object_size",
                    "num_frames": (frames or [4] * len(scores))[i],
                    "score": x,
                    "map_placement": (placement or {}).get(s, scores)[i],
                }
                for i, x in enumerate(scores)
            ],
        }
        for s, scores in scores_by_seed.items()
    ]


def test_verdicts_follow_the_interval():
    assert verdict(0.5, 4.0) == "reproduced"
    assert verdict(-3.0, 0.9) == "not reproduced"
    assert verdict(-5.0, -1.0) == "not reproduced"
    assert verdict(-1.0, 3.0) == "inconclusive at this scale"


def test_paired_effect_is_a_difference_of_the_same_questions_and_seeds():
    a = {0: {"q1": 1.0, "q2": 0.5, "q3": 1.0}, 1: {"q1": 1.0, "q2": 1.0}}
    b = {0: {"q1": 0.0, "q2": 0.5}, 1: {"q1": 0.5, "q2": 0.0}, 2: {"q1": 0.0, "q2": 0.0}}
    found = paired_effect(a, b, n_boot=200)
    assert found["seeds"] == [0, 1] and found["n_questions"] == 2  # q3 and seed 2: unpaired
    assert found["effect"] == pytest.approx(100 * (1.0 + 0.0 + 0.5 + 1.0) / 4)
    assert found["per_seed"] == pytest.approx([50.0, 75.0])
    lo, hi = found["ci"]
    assert 0 <= lo <= found["effect"] <= hi <= 100
    assert paired_effect(a, {3: {"q1": 0.0}}) is None


def test_claims_separate_an_effect_from_noise():
    n = 40
    good = {s: [1.0 if i % 4 else 0.0 for i in range(n)] for s in (0, 1, 2)}
    bad = {s: [0.0 if i % 4 else 1.0 for i in range(n)] for s in (0, 1, 2)}
    noisy = {s: [float((i * 7 + s) % 2) for i in range(n)] for s in (0, 1, 2)}
    spec = {"a": "metric", "b": "grid"}
    assert compare(_results("metric", good) + _results("grid", bad), spec)["verdict"] == (
        "reproduced"
    )
    assert compare(_results("metric", bad) + _results("grid", good), spec)["verdict"] == (
        "not reproduced"
    )
    same = compare(_results("metric", good) + _results("grid", good), spec)
    assert same["effect"] == 0 and same["verdict"] == "not reproduced"
    shuffled = compare(_results("metric", noisy) + _results("grid", good), spec)
    assert shuffled["ci"][0] < 0 < shuffled["ci"][1] or shuffled["verdict"] != "reproduced"
    size_only = compare(
        _results("metric", good) + _results("grid", bad), {**spec, "tasks": ("object_size",)}
    )
    assert size_only["n_questions"] == n // 2


def test_the_frame_count_claim_reads_map_accuracy_by_frames():
    frames = [(1, 4, 8, 12, 16)[i % 5] for i in range(50)]
    placement = {s: [0.9 if f in (4, 8) else 0.4 for f in frames] for s in (0, 1)}
    results = _results("metric", {0: [0.0] * 50, 1: [0.0] * 50}, frames, placement)
    found = frames_effect(results, n_boot=200)
    assert found["effect"] == pytest.approx(50.0) and found["verdict"] == "reproduced"
    assert found["best"] in ("4", "8") and found["per_frames"]["16"] == pytest.approx(40.0)
    rows = claims_table(results, n_boot=100)
    assert [r["id"] for r in rows] == ["frames_4_8"]  # no other variant: no comparison


def test_smoke_ablation_runs_and_resumes_without_retraining(tmp_path):
    """The ablation profile at smoke size, two workers: every variant trained and evaluated, the
    claims table written; run again, no job trains again, and a job whose result is gone runs
    alone."""
    from v2lo_utils.runner import run_profile

    over = {
        "data_dir": str(tmp_path / "train"),
        "qvs_dir": str(tmp_path / "qvs"),
        "scenes": 4,
        "qvs_questions": 20,
        "recipe": "smoke",
        "seeds": [0],
        "max_questions": 20,
        "parallel_jobs": 2,
        "n_boot": 50,
    }
    kw = dict(run_id="t", runs_dir=tmp_path / "runs")
    run_dir = run_profile("ablation", overrides=over, **kw).run_dir
    doc = json.loads((run_dir / "ablation.json").read_text())
    baselines = {"blind baseline", "question-only baseline"}
    assert {r["variant"] for r in doc["variants"]} == set(VARIANTS) | baselines
    ids = {r["id"] for r in doc["claims"]}
    assert {"metric_vs_grid", "map_vs_no_map", "map_vs_answer_only", "rl_after_sft"} <= ids
    assert "frame_mix" in ids and "| verdict |" in (run_dir / "ablation_claims.md").read_text()
    assert (run_dir / "ablation_report.html").stat().st_size > 10_000
    results = {v: run_dir / "ablation" / v / "seed0" / "result.json" for v in VARIANTS}
    for variant, path in results.items():
        result = json.loads(path.read_text())
        assert result["form"] == VARIANTS[variant].form and len(result["records"]) == 20
    grpo = json.loads(results["metric_grpo"].read_text())
    assert Path(grpo["model"]).name == "merged"  # smoke's GRPO trains a LoRA adapter: merged
    stamps = {v: p.stat().st_mtime_ns for v, p in results.items()}
    weights = run_dir / "ablation" / "answer_only" / "seed0" / "sft" / "final" / "model.safetensors"
    trained = weights.stat().st_mtime_ns
    results["answer_only"].unlink()  # as if killed after training, before its result was written
    del over["scenes"], over["qvs_questions"]  # 01's: not declared by 06
    run_profile("ablation", only=["06"], overrides=over, **kw)
    again = {v: p.stat().st_mtime_ns for v, p in results.items()}
    assert [v for v in VARIANTS if again[v] != stamps[v]] == ["answer_only"]
    assert weights.stat().st_mtime_ns == trained  # evaluated again, not trained again
    log = (run_dir / "06_ablation.ipynb").read_text()
    assert "metric/seed0: done earlier" in log and "answer_only/seed0: started" in log
    assert "metric/seed0: started" not in log
    over["max_questions"] = 10  # other evaluation settings: evaluated again, not trained again
    run_profile("ablation", only=["06"], overrides=over, **kw)
    assert all(len(json.loads(p.read_text())["records"]) == 10 for p in results.values())
    assert weights.stat().st_mtime_ns == trained
    progress = (run_dir / "ablation" / "progress.log").read_text()
    assert "metric/seed0: evaluated with other settings" in progress
    assert (
        progress.count("answer_only/seed0: started") == 3
        and "metric/seed0: done earlier" in progress
    )


def test_the_recipe_is_a_profile_and_names_a_model():
    from v2lo_utils.errors import ParameterError

    with pytest.raises(ParameterError, match="recipe 'papr': no such profile"):
        recipe_parameters("papr")
    with pytest.raises(ParameterError, match="-p model_source="):
        recipe_parameters("paper")  # the 7B recipe has no preset: a local checkpoint folder
    with pytest.raises(ParameterError, match="only 02_sft"):
        recipe_parameters("demo", {"demo": {"02_sf": {}}})
    stages = recipe_parameters("paper", model_source="/models/7b", data_dir="d")
    sft, grpo, evals = stages["02_sft"], stages["03_grpo"], stages["05_qvs_bench_analysis"]
    assert (sft["mode"], sft["model_source"], sft["data_dir"]) == ("lora", "/models/7b", "d")
    assert grpo["data_dir"] == "d" and evals["max_new_tokens"] == 1024


def test_a_variant_stopped_short_is_named():
    from v2lo_utils.claims import unequal_budgets

    def job(variant, seed, steps, planned):
        return {"variant": variant, "seed": seed, "steps": steps, "train": {"max_steps": planned}}

    results = [job("metric", 0, 600, 600), job("grid", 0, 512, 600), job("metric_grpo", 1, 31, 40)]
    assert unequal_budgets(results) == [
        "grid seed 0: 512 of 600 steps",
        "metric_grpo seed 1: 31 of 40 steps",
    ]
    assert (
        unequal_budgets([job("metric", 0, 600, 600), {"variant": "x", "seed": 0, "steps": 3}]) == []
    )


def test_a_gpu_runs_one_job_at_a_time_in_this_process(tmp_path, monkeypatch):
    """Two 7B trainings must not share one GPU: there, parallel_jobs > 1 runs the jobs in turn,
    in this process, each after the one it starts from."""
    import v2lo_utils.ablation as ablation
    import v2lo_utils.workers as workers

    order = []

    def job(j, cfg):
        order.append(j.name)
        return {"variant": j.variant, "seed": j.seed, "steps": 1, "score": 0.0, "seconds": 0.0}

    def no_pool(*args, **kwargs):
        raise AssertionError("no worker processes on a GPU")

    monkeypatch.setattr(ablation, "_on_gpu", lambda: True)
    monkeypatch.setattr(ablation, "run_job", job)
    monkeypatch.setattr(ablation, "prepare", lambda cfg: None)
    monkeypatch.setattr(workers, "parent_bound_pool", no_pool)
    lines = []
    cfg = {"out_dir": str(tmp_path)}
    results = ablation.run_ablation(cfg, ["metric_grpo", "metric"], [0], 2, 1, lines.append)
    assert order == ["metric/seed0", "metric_grpo/seed0"] and len(results) == 2
    assert lines[0].startswith("a GPU: jobs run one at a time")


def test_a_failed_job_is_named_and_the_others_finish(tmp_path, monkeypatch):
    import v2lo_utils.ablation as ablation

    def job(j, cfg):
        if j.variant == "metric":
            raise ValueError("rows/7: field 'target' is empty")
        return {"variant": j.variant, "seed": j.seed, "steps": 1, "score": 0.0, "seconds": 0.0}

    monkeypatch.setattr(ablation, "_on_gpu", lambda: False)
    monkeypatch.setattr(ablation, "run_job", job)
    monkeypatch.setattr(ablation, "prepare", lambda cfg: None)
    lines = []
    cfg = {"out_dir": str(tmp_path)}
    with pytest.raises(ablation.AblationError) as err:
        ablation.run_ablation(cfg, ["metric", "grid", "metric_grpo"], [0], 1, 1, lines.append)
    text = str(err.value)
    assert "2 of 3 ablation jobs failed" in text and "field 'target' is empty" in text
    assert "metric_grpo/seed0: AblationError: metric failed" in text
    assert any(line == "grid/seed0: 1 steps, 0 s, score 0.000" for line in lines)


def test_a_stage_trained_with_other_parameters_is_not_reused(tmp_path):
    from dataclasses import dataclass, replace

    from v2lo_utils.ablation import AblationError, _train

    @dataclass
    class Params:
        output_dir: str
        max_steps: int = 600
        learning_rate: float = 1e-3
        extra: dict | None = None

    calls = []

    def train(p):
        calls.append(p)
        (Path(p.output_dir) / "final").mkdir(parents=True)

        class Result:
            final_dir, global_step, train_seconds, stopped_by_budget = "f", p.max_steps, 1.0, False

        return Result()

    params = Params(str(tmp_path / "sft"))
    first = _train("sft", params, train)
    assert first["steps"] == 600 and first["settings"]["max_steps"] == 600
    assert _train("sft", replace(params, extra={"disable_tqdm": True}), train) == first
    assert len(calls) == 1  # finished: read back, not trained again
    with pytest.raises(AblationError, match=r"other parameters \(learning_rate, max_steps\)"):
        _train("sft", replace(params, max_steps=1200, learning_rate=1e-4), train)
