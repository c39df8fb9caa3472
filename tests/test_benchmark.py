"""QVS-Bench scoring, model-free diagnostics, the score command, resumable evaluation."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from v2lo_utils.baselines import blind_predictions, diagnostics, question_only_predictions
from v2lo_utils.benchmark import (
    SUMMARY_FIELDS,
    bootstrap_ci,
    map_controls,
    pearson,
    score_benchmark,
    score_row,
    subset,
    swap_frames,
)
from v2lo_utils.cli import main
from v2lo_utils.cogmap import parse_response
from v2lo_utils.dataset import BuildConfig, build_qvs_bench, read_jsonl
from v2lo_utils.evaluation import evaluate_benchmark, score_file
from v2lo_utils.models import load_model
from v2lo_utils.predictions import open_for_resume, read_predictions
from v2lo_utils.presets import create_preset
from v2lo_utils.questions import solve


@pytest.fixture(scope="module")
def qvs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qvs")
    build_qvs_bench(root, BuildConfig(questions=60, seed=3, image_size=56, workers=1))
    return root


def test_ground_truth_maps_answer_everything(qvs):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    diag = diagnostics(rows, grid_sizes=(10,), sigmas=(0.1, 1.0), repeats=2)
    assert all(v == 1.0 for v in diag["ground_truth"].values())  # every task, 100%
    assert all(v == 1.0 for v in diag["rounded_0.1m"].values())  # the 0.1 m text loses nothing
    assert diag["grid_10"]["object_size"] == 0.0  # a grid map has no sizes
    assert diag["grid_10"]["overall"] < 1.0
    assert diag["noise"]["1.0"]["overall"] < diag["noise"]["0.1"]["overall"] <= 1.0


def test_perfect_and_blind_predictions(qvs):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    perfect = score_benchmark(rows, {r["id"]: {"completion": r["target"]} for r in rows}, n_boot=50)
    assert perfect["overall"] == 1.0 and perfect["extraction_failure_rate"] == 0.0
    assert set(perfect["by_frames"]) == {"1", "4", "8", "12", "16"}
    assert all(m["object_recall"] == 1.0 for m in perfect["map_by_frames"].values())
    blind = score_benchmark(rows, blind_predictions(rows, rows), n_boot=50)
    assert 0.0 < blind["overall"] < 0.6
    guesses = {
        r["id"]: p["completion"]
        for r, p in zip(rows, blind_predictions(rows, rows).values(), strict=True)
    }
    letters = [r["answer"] for r in rows if r["task"] == "vertical_direction"]
    top = max(sorted(set(letters)), key=letters.count)
    vertical = {guesses[r["id"]] for r in rows if r["task"] == "vertical_direction"}
    assert len(vertical) == 1  # one fixed completion per task
    parsed = parse_response(vertical.pop())
    assert parsed.format_ok and parsed.answer == top and len(parsed.cogmap) == 4
    assert 0.0 < blind["map_by_frames"]["4"]["object_recall"] < 1.0


def test_question_only_baseline_copies_names_and_computes_its_answer(qvs):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    preds = question_only_predictions(rows, rows)
    for r in rows:
        parsed = parse_response(preds[r["id"]]["completion"])
        assert parsed.format_ok, preds[r["id"]]
        names = [o.name for o in parsed.cogmap]
        assert set(names) == {o["object_name"] for o in r["map"]}  # the question's objects
        assert parsed.answer == (solve(r["task"], r["params"], parsed.cogmap) or "")
    # every instance of a category sits at the same mean box: it cannot see where things are
    boxes = {}
    for r in rows:
        for o in parse_response(preds[r["id"]]["completion"]).cogmap:
            boxes.setdefault(o.name, set()).add(o.bbox)
    assert all(len(b) == 1 for b in boxes.values())
    summary = score_benchmark(rows, preds, n_boot=50)
    assert all(m["object_recall"] > 0.9 for m in summary["map_by_frames"].values())


def test_subset_keeps_the_benchmarks_shares_in_file_order_and_nests(qvs):
    cells = {("a", 1): 50, ("a", 4): 30, ("b", 1): 15, ("b", 4): 5}  # listed cell by cell
    rows = [
        {"id": f"{t}{f}-{i}", "task": t, "num_frames": f}
        for (t, f), n in cells.items()
        for i in range(n)
    ]
    ids = lambda rs: [r["id"] for r in rs]  # noqa: E731
    assert ids(subset(rows, 20)) == (
        [f"a1-{i}" for i in range(10)]
        + [f"a4-{i}" for i in range(6)]
        + [f"b1-{i}" for i in range(3)]
        + ["b4-0"]
    )
    # quotas 3.5, 2.1, 1.05, 0.35: the one left over goes to the largest remainder
    assert ids(subset(rows, 7)) == ["a1-0", "a1-1", "a1-2", "a1-3", "a4-0", "a4-1", "b1-0"]
    assert set(ids(subset(rows, 7))) <= set(ids(subset(rows, 20)))
    assert subset(rows, 0) == rows and subset(rows, 500) == rows
    # the built benchmark: every task x frame-count cell within one question of its share
    bench = read_jsonl(qvs / "qvs_bench.jsonl")
    for n in (13, 30, 45):
        part = subset(bench, n)
        assert len(part) == n and len({r["id"] for r in part}) == n
        assert [r for r in bench if r in part] == part  # the file's order
        for key in {(r["task"], r["num_frames"]) for r in bench}:
            share = sum((r["task"], r["num_frames"]) == key for r in bench) / len(bench)
            got = sum((r["task"], r["num_frames"]) == key for r in part)
            assert abs(got - n * share) < 1, (n, key, got, n * share)


def test_swapped_frames_come_from_another_scene_with_the_same_count(qvs):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    swapped = swap_frames(rows, seed=1)
    scene_of = {f: r["scene_id"] for r in rows for f in r["frames"]}
    for r, s in zip(rows, swapped, strict=True):
        assert s["num_frames"] == r["num_frames"] == len(s["frames"])
        assert all(scene_of[f] != r["scene_id"] for f in s["frames"])  # no frame of its own scene
        assert s["swapped_from"] != r["scene_id"]
        assert (s["question"], s["answer"], s["map"]) == (r["question"], r["answer"], r["map"])
    assert swap_frames(rows, seed=1) == swapped and swap_frames(rows, seed=2) != swapped
    assert rows[0]["frames"] != swapped[0]["frames"]  # the input rows are left alone
    one_scene = [dict(r, scene_id="s") for r in rows if r["num_frames"] == 1]
    with pytest.raises(ValueError, match="one scene holds"):
        swap_frames(one_scene)
    mixed = one_scene + [r for r in rows if r["num_frames"] == 4]
    kept = swap_frames(mixed, strict=False)  # the unswappable 1-frame rows are left out
    assert kept and all(r["num_frames"] == 4 and r["swapped_from"] != r["scene_id"] for r in kept)


def test_consistency_and_axis_correlations_on_known_maps(qvs):
    from v2lo_utils.cogmap import CogMap, format_response

    rows = [r for r in read_jsonl(qvs / "qvs_bench.jsonl") if r["task"] != "object_count"]
    recs_agree, recs_disagree, recs_flipped = [], [], []
    for r in rows:
        truth = CogMap.from_json(r["map"]).rounded()
        shifted = truth.translated(1.0, 0.0)  # every object 1 m to the right
        own = solve(r["task"], r["params"], shifted)
        wrong = next(o for o in ("A", "B", "C", "D", "0.01") if o != own)
        recs_agree.append(score_row(r, format_response(shifted, "t", own)))
        recs_disagree.append(score_row(r, format_response(shifted, "t", wrong)))
        mirrored = CogMap.from_boxes(
            (o.name, (-o.bbox[2], o.bbox[1], -o.bbox[0], o.bbox[3])) for o in truth
        )
        recs_flipped.append(score_row(r, format_response(mirrored, "t", own)))
    agree, disagree = map_controls(recs_agree), map_controls(recs_disagree)
    assert agree["consistency"] == 1.0 and agree["consistency_defined"] == 1.0
    assert disagree["consistency"] < 0.2
    # a shifted map keeps both correlations and is 1 m off; a mirrored one reverses x only
    assert agree["r_x"] > 0.99 and agree["r_y"] > 0.99
    assert agree["center_error_m"] == pytest.approx(1.0, abs=0.06)
    flipped = map_controls(recs_flipped)
    assert flipped["r_x"] < -0.9 and flipped["r_y"] > 0.99
    assert score_row(rows[0], "no map")["consistency"] is None


def test_map_by_view_splits_objects_by_whether_the_first_frame_shows_them(qvs):
    from v2lo_utils.benchmark import map_by_view
    from v2lo_utils.cogmap import CogMap, ObjectBox, format_response

    rows = [r for r in read_jsonl(qvs / "qvs_bench.jsonl") if r["task"] != "object_count"]
    recs, later_rows = [], 0
    for r in rows:
        truth = CogMap.from_json(r["map"]).rounded()
        # objects the first frame shows exact, the others 2 m to the right
        moved = CogMap(
            tuple(
                o
                if seen[0] > 0
                else ObjectBox(o.name, (o.bbox[0] + 2, o.bbox[1], o.bbox[2] + 2, o.bbox[3]))
                for o, seen in zip(truth.objects, r["visibility"], strict=True)
            )
        )
        rec = score_row(r, format_response(moved, "t", "A"))
        centers = [o.center for o in CogMap.from_json(r["map"]).objects]
        for pair, first in zip(rec["map_pairs"], rec["map_first_frame"], strict=True):
            j = min(range(len(centers)), key=lambda k: math.dist(centers[k], pair[2:]))
            assert first == (r["visibility"][j][0] > 0)
        later_rows += not all(rec["map_first_frame"])
        recs.append(rec)
    assert later_rows  # the fixture has objects only later frames show
    view = map_by_view(recs)
    assert view["all"]["first_frame"]["center_error_m"] == pytest.approx(0.0, abs=0.06)
    assert view["all"]["later_frames"]["center_error_m"] == pytest.approx(2.0, abs=0.06)
    n = view["all"]["first_frame"]["n_objects"] + view["all"]["later_frames"]["n_objects"]
    assert n == sum(len(r["map_pairs"]) for r in recs)
    one = [r for r in recs if r["num_frames"] == 1]
    assert one and all(all(r["map_first_frame"]) for r in one)  # one frame: it shows them all
    assert map_by_view([{k: v for k, v in r.items() if k != "map_first_frame"} for r in recs]) == {}


def test_view_sentence_gives_both_kinds_beside_the_question_only_baseline():
    from v2lo_utils.report import control_verdicts, view_sentence

    def kind(err, n):
        return {"center_error_m": err, "n_objects": n, "r_x": 0.9, "r_y": 0.7}

    model = {"map_by_view": {"1-4": {"first_frame": kind(1.0, 50), "later_frames": kind(2.9, 40)}}}
    qonly = {"map_by_view": {"1-4": {"first_frame": kind(2.3, 50), "later_frames": kind(2.7, 40)}}}
    text = view_sentence("m", "1-4", model, qonly)
    assert text == (
        "m, 1-4 frames, center error of the objects shown by the first frame 1.00 m (r_x 0.90, "
        "r_y 0.70; 50 objects; question-only 2.30 m); only by later frames 2.90 m (r_x 0.90, "
        "r_y 0.70; 40 objects; question-only 2.70 m)."
    )
    assert view_sentence("m", "8-16", model, qonly) is None
    group = {"center_error_m": 1.5, "n_objects": 90, "r_x": 0.7, "r_y": 0.6}
    summary = {**model, "map_by_group": {"1-4": group}, "controls": {"swapped": {"1-4": group}}}
    lines = control_verdicts("m", summary, qonly)
    assert lines[1] == text  # right after its group's verdict


def test_cue_priors_score_each_cue_by_the_prior_it_allows():
    from v2lo_utils.baselines import cue_priors, cue_priors_by_group
    from v2lo_utils.report import cue_sentences

    def item(frame, turn, center, k=4):
        return {
            "frame": frame,
            "turn": turn,
            "heading": frame if turn > 0 else 4 - frame,
            "num_frames": k,
        }, center

    # the camera turns left (turn +1) or right: the frame showing an object and the turn fix it
    places = {(1, 1): (-3.0, 0.0), (1, -1): (3.0, 0.0), (2, 1): (-1.0, -3.0), (2, -1): (1.0, -3.0)}
    fit = [item(f, p, c) for (f, p), c in places.items() for _ in range(3)]
    test = [item(f, p, c) for (f, p), c in places.items()]
    got = cue_priors(fit, test)
    assert got["frame + turn"] == {"center_error_m": 0.0, "n": 4}
    # headings 1 and 3 tell the first frame's sides apart; both second frames are heading 2
    assert got["heading"]["center_error_m"] == 0.5
    # nothing known: every object at the mean (0, -1.5)
    assert math.isclose(got["none"]["center_error_m"], mean_dist(test, (0.0, -1.5)))
    # the frame alone: its two sides average out
    assert math.isclose(got["frame"]["center_error_m"], 3.0 * 0.5 + 1.0 * 0.5)
    assert 0.0 < got["turn"]["center_error_m"] < got["none"]["center_error_m"]
    # a cue value the fit never saw falls back on the mean of everything
    unseen = cue_priors(fit, [item(3, 1, (0.0, -1.5))])
    assert unseen["frame + turn"]["center_error_m"] == 0.0
    assert cue_priors([], test) == {} and cue_priors(fit, []) == {}
    # grouped as the summaries group frame counts; the 12-frame object only in 8-16
    late = item(1, 1, (0.0, 9.0), 12)
    by = cue_priors_by_group([*fit, late], [*test, late])
    assert by["1-4"]["none"]["n"] == 4 and by["8-16"]["frame + turn"]["center_error_m"] == 0.0
    text = cue_sentences(by)
    assert len(text) == 2 and text[0].startswith(
        "The objects only later frames show, 1-4 frames (4)"
    )
    assert (
        "errs by 2.58 m knowing only that the first frame does not show them" in text[0]
        and "0.50 m knowing that frame's" in text[0]
    )


def mean_dist(items, point):
    return sum(math.dist(c, point) for _, c in items) / len(items)


def test_direction_rows_record_their_thinks_steps_and_the_summary_their_shares(qvs):
    from v2lo_utils.benchmark import summarize_records, think_step_shares
    from v2lo_utils.questions import DIRECTIONS

    rows = [r for r in read_jsonl(qvs / "qvs_bench.jsonl") if r["task"] in DIRECTIONS]
    assert len(rows) >= 4
    recs = [score_row(r, r["target"]) for r in rows]  # the targets: every step follows
    assert all(rec["think_steps"]["v"] and rec["think_steps"]["option"] for rec in recs)
    wrong = rows[0]["target"].replace("option ", "option X", 1)  # no letter after 'option'
    recs.append(score_row(rows[0], wrong))
    assert recs[-1]["think_steps"]["option"] is False
    recs.append(score_row(rows[0], "<map>[]</map><think>t</think><answer>A</answer>"))
    assert recs[-1].get("think_steps") is None  # no map: nothing to judge against
    other = [r for r in read_jsonl(qvs / "qvs_bench.jsonl") if r["task"] not in DIRECTIONS]
    recs.append(score_row(other[0], other[0]["target"]))
    assert "think_steps" not in recs[-1]
    got = think_step_shares(recs)
    assert got["n"] == len(rows) + 1
    assert got["option"] == pytest.approx(len(rows) / (len(rows) + 1))
    assert got["centroids"] == got["v"] == got["signs"] == got["quadrant"] == 1.0
    relative = sum(r["task"] == "relative_direction" for r in rows) + (
        rows[0]["task"] == "relative_direction"
    )
    assert got["frame"] == (None if relative == len(rows) + 1 else 1.0)
    assert summarize_records(recs)["think_steps"] == got
    assert think_step_shares([]) == {"n": 0, **dict.fromkeys(got.keys() - {"n"})}


def test_think_follows_is_the_share_of_letters_that_are_the_thinks_named_option(qvs):
    from v2lo_utils.benchmark import headline
    from v2lo_utils.cogmap import CogMap, format_response

    rows = [r for r in read_jsonl(qvs / "qvs_bench.jsonl") if r.get("options")]
    assert len(rows) >= 4
    recs = []
    for k, r in enumerate(rows):
        letter, text = r["options"][k % len(r["options"])].split(". ", 1)
        other = next(o[0] for o in r["options"] if o[0] != letter)
        think = f"It is {text}: option {letter}."
        answer = letter if k % 2 == 0 else other  # every other answer leaves its think
        recs.append(score_row(r, format_response(CogMap.from_json(r["map"]), think, answer)))
        assert recs[-1]["think_option"] == letter
    recs.append(score_row(rows[0], "<think>names nothing</think><answer>A</answer>"))
    assert recs[-1]["think_option"] is None
    got = headline(recs, map_controls(recs))
    assert got["think_named"] == len(rows)
    assert got["think_follows"] == pytest.approx(
        sum(k % 2 == 0 for k in range(len(rows))) / len(rows)
    )
    assert headline(recs[-1:], map_controls(recs[-1:]))["think_follows"] is None


def test_map_answer_scores_what_the_models_own_map_answers(qvs):
    """map_answer: solve on the written map, scored against the truth, whatever the model
    answered; 0 without a map or when the map lacks a named object."""
    from v2lo_utils.cogmap import CogMap, format_response

    rows = [r for r in read_jsonl(qvs / "qvs_bench.jsonl") if r["task"] != "object_count"]
    right_map, mirrored_map = [], []
    for r in rows:
        truth = CogMap.from_json(r["map"])
        wrong = next(o for o in ("A", "B", "C", "D", "0.01") if o != r["answer"])
        # the true map with a wrong answer: the map answers right, the model does not
        right_map.append(score_row(r, format_response(truth, "t", wrong)))
        mirror = CogMap.from_boxes(
            (o.name, (-o.bbox[2], o.bbox[1], -o.bbox[0], o.bbox[3])) for o in truth
        )
        mirrored_map.append(score_row(r, format_response(mirror, "t", r["answer"])))
    good = map_controls(right_map)
    assert good["map_answer"] == 1.0 and good["consistency"] < 0.2
    assert all(m["score"] < 1.0 for m in right_map)
    # mirrored left-right: horizontal directions flip; sizes and distances stay
    by_task: dict[str, list[float]] = {}
    for r, m in zip(rows, mirrored_map, strict=True):
        by_task.setdefault(r["task"], []).append(m["map_answer"])
    assert max(by_task["horizontal_direction"]) == 0.0
    assert min(by_task.get("object_size", [1.0]) + by_task.get("min_distance", [1.0])) == 1.0
    r0 = rows[0]
    assert score_row(r0, "no map")["map_answer"] == 0.0
    lacking = CogMap.from_boxes([("nothing_named", (0.0, 0.0, 1.0, 1.0))])
    assert score_row(r0, format_response(lacking, "t", r0["answer"]))["map_answer"] == 0.0
    preds = {
        str(r["id"]): {"completion": format_response(CogMap.from_json(r["map"]), "t", "Z")}
        for r in rows
    }
    summary = score_benchmark(rows, preds, n_boot=10)
    assert summary["map_answer"] == 1.0 and summary["answer_score"] < 0.2
    assert set(summary["map_answer_by_task"]) == {r["task"] for r in rows}


def test_messy_predictions_file_is_scored_and_counted(qvs, tmp_path, capsys):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    lines = [
        json.dumps({"id": rows[0]["id"], "completion": rows[0]["target"]}),
        json.dumps({"id": rows[1]["id"], "completion": ""}),  # empty
        json.dumps({"id": rows[2]["id"], "completion": "I think it is left <answer>"}),  # garbage
        json.dumps({"id": rows[3]["id"], "completion": None}),  # not a string: not a record
        json.dumps({"id": "not-a-question", "completion": "<answer>A</answer>"}),  # unknown id
        json.dumps({"id": rows[0]["id"], "completion": rows[0]["target"]}),  # duplicate
        "{broken json",
        json.dumps(["no", "id"]),
        "",
    ]
    f = tmp_path / "preds.jsonl"
    f.write_text("\n".join(lines) + "\n")
    out = tmp_path / "summary.json"
    assert (
        main(
            [
                "score",
                "--benchmark",
                str(qvs),
                "--predictions",
                str(f),
                "--json",
                str(out),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "57 missing, 1 unknown ids, 1 empty, 3 unreadable lines, 1 duplicates" in text
    s = json.loads(out.read_text())
    assert set(SUMMARY_FIELDS) <= set(s)
    assert s["counts"]["questions"] == 60 and s["counts"]["missing"] == 57
    assert s["overall"] == pytest.approx(1 / 60)
    for key in ("by_task", "by_frames"):
        assert all(0.0 <= v <= 1.0 for v in s[key].values())
    assert all(0.0 <= v <= 1.0 for cells in s["by_task_frames"].values() for v in cells.values())
    assert sum(n for cells in s["n_by_task_frames"].values() for n in cells.values()) == 60
    assert s["n_by_task_frames"].keys() == s["by_task_frames"].keys()
    assert s["extraction_failure_rate"] == pytest.approx(59 / 60)


def test_score_command_reads_vsi_layout(tmp_path, capsys):
    bench = tmp_path / "vsi.jsonl"
    bench.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "id": 1,
                    "question_type": "object_counting",
                    "question": "How many chairs?",
                    "options": None,
                    "ground_truth": "4",
                },
                {
                    "id": 2,
                    "question_type": "object_rel_direction_easy",
                    "question": "left or right?",
                    "options": ["A. left", "B. right"],
                    "ground_truth": "B",
                },
            ]
        )
    )
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        json.dumps({"id": 1, "completion": "<answer>5</answer>"})
        + "\n"
        + json.dumps({"id": 2, "completion": "<answer>B</answer>"})
        + "\n"
    )
    out = tmp_path / "s.json"
    main(
        [
            "score",
            "--benchmark",
            str(bench),
            "--predictions",
            str(preds),
            "--json",
            str(out),
            "--bootstrap",
            "20",
        ]
    )
    s = json.loads(out.read_text())
    # MRA of 5 against 4: relative error 0.25 passes theta = 0.50 ... 0.75, six of ten
    assert s["by_task"] == {"object_counting": pytest.approx(0.6), "object_rel_direction_easy": 1.0}
    assert s["by_frames"] == {"n/a": pytest.approx(0.8)}


def test_score_command_names_missing_inputs(tmp_path, qvs, capsys):
    args = ["score", "--benchmark", str(qvs), "--predictions", str(tmp_path / "nope.jsonl")]
    assert main(args) == 2
    assert "nope.jsonl: no such predictions file" in capsys.readouterr().err
    assert main(["score", "--benchmark", str(tmp_path), "--predictions", "x"]) == 2
    assert "qvs_bench.jsonl: no such file" in capsys.readouterr().err


def test_statistics_helpers():
    lo, hi = bootstrap_ci([0.0, 1.0] * 50, n=500)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None


def test_evaluation_killed_midway_resumes_without_loss_or_duplicates(qvs, tmp_path):
    model_dir = create_preset("tiny", tmp_path / "tiny")
    out = tmp_path / "preds.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "v2lo_utils.cli",
        "eval",
        "--benchmark",
        str(qvs),
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--batch-size",
        "1",
        "--max-new-tokens",
        "6",
        "--limit",
        "20",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(read_predictions(out).records)
    assert 4 <= before < 20, before
    with open(out, "a") as fh:  # a write cut short by the kill
        fh.write('{"id": "qvs-00')
    rows = subset(read_jsonl(qvs / "qvs_bench.jsonl"), 20)  # what --limit 20 evaluates
    # the same command resumes (another batch size is no other setting: greedy decoding)
    resume = cmd[3:]
    resume[resume.index("--batch-size") + 1] = "4"
    assert main(resume) == 0
    summary = score_file(rows, out, n_boot=20)
    loaded = load_model(model_dir)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # nothing lost, nothing twice
    assert summary["counts"]["missing"] == 0 and summary["counts"]["bad_lines"] == 0
    # deterministic: an uninterrupted run writes the same completions
    fresh = tmp_path / "fresh.jsonl"
    evaluate_benchmark(
        loaded.model,
        loaded.processor,
        rows,
        qvs,
        fresh,
        max_new_tokens=6,
        batch_size=3,
        n_boot=20,
        progress=False,
    )
    a, b = read_predictions(out).records, read_predictions(fresh).records
    assert {k: v["completion"] for k, v in a.items()} == {k: v["completion"] for k, v in b.items()}
    assert open_for_resume(out) == set(a)


def test_report_verdicts_say_where_a_model_stays_at_baseline():
    from v2lo_utils.report import verdicts

    def summary(overall, by_task, recall, err):
        return {
            "overall": overall,
            "by_task": by_task,
            "map_by_frames": {"1": {"object_recall": recall, "center_error_m": err}},
        }

    lines = verdicts(
        {
            "blind baseline": summary(0.3, {"a": 0.5, "b": 0.1}, 0.2, 2.0),
            "model": summary(0.4, {"a": 0.4, "b": 0.6}, 0.9, 2.5),
        }
    )
    assert lines == [
        "model: overall 40.0% against 30.0% blind; at or below the blind baseline on a. "
        "Map object recall 0.90 against 0.20 blind; center error 2.50 m against 2.00 m "
        "blind (not better)."
    ]
    assert verdicts({"model": summary(0.4, {}, None, None)}) == []
    lines = verdicts(
        {
            "blind baseline": summary(0.3, {"a": 0.5}, 0.2, 2.0),
            "question-only baseline": summary(0.3, {"a": 0.5}, 1.0, 2.6),
            "model": summary(0.4, {"a": 0.6}, 0.9, 1.5),
        }
    )
    assert lines == [
        "model: overall 40.0% against 30.0% blind; above the blind baseline on every task. "
        "Map object recall 0.90 against 0.20 blind; center error 1.50 m against 2.00 m "
        "blind (better) and 2.60 m for the question's objects at mean boxes (better)."
    ]


def test_direction_cells_give_each_direction_task_at_1_and_4_frames_against_blind():
    from v2lo_utils.report import direction_cells, verdicts

    def summary(v, h, r, counts=True):
        cells = {"vertical_direction": v, "horizontal_direction": h, "relative_direction": r}
        out = {"overall": 0.3, "by_task": {}, "by_task_frames": cells}
        if counts:
            out["n_by_task_frames"] = {t: {k: 4 for k in c} for t, c in cells.items()}
        return out

    blind = summary({"1": 0.25, "4": 0.5, "8": 0.0}, {"1": 0.0, "4": 0.25}, {"1": 0.5})
    model = summary({"1": 0.5, "4": 0.5, "8": 1.0}, {"1": 0.25, "4": 0.0}, {"1": 0.75})
    assert direction_cells("m", model, blind) == (
        "m: direction tasks at 1 and 4 frames, percent against blind (questions): vertical "
        "50/25 (4), 50/50 (4); horizontal 25/0 (4), 0/25 (4); relative 75/50 (4); "
        "above blind in 3 of 5."
    )  # a tie is not above; 8 frames not counted; a cell the benchmark lacks is left out
    lines = verdicts({"blind baseline": blind, "m": model})
    assert lines[1] == direction_cells("m", model, blind)
    bare = summary({"1": 1.0}, {}, {}, counts=False)  # an older summary: no counts
    assert direction_cells("m", bare, blind).endswith("vertical 100/25; above blind in 1 of 1.")
    assert direction_cells("m", {"by_task_frames": {"object_size": {"1": 1.0}}}, blind) is None


def test_control_verdicts_say_whether_maps_come_from_frames_and_answers_from_maps():
    from v2lo_utils.report import control_verdicts

    def group(err, n=40, cons=None):
        return {"center_error_m": err, "n_objects": n, "r_x": 0.7, "r_y": 0.6, "consistency": cons}

    sees = {
        "map_by_group": {"1-4": group(1.0), "8-16": group(2.0, n=5), "all": group(1.2, cons=0.8)},
        "controls": {
            "swapped": {"1-4": group(2.0), "8-16": group(2.1)},
            "question_only": {"1-4": group(1.8), "8-16": group(2.2)},
        },
    }
    lines = control_verdicts("m", sees)
    assert lines[0].startswith("m, 1-4 frames: maps from the frames? yes: center error 1.00 m")
    assert "too few matched objects to tell" in lines[1]  # 5 objects
    assert lines[2].startswith("m: answers from its maps? yes: 80.0%")
    own = {**sees, "answer_score": 0.3}
    own["map_by_group"] = {
        **sees["map_by_group"],
        "all": {**group(1.2, cons=0.8), "map_answer": 0.45},
    }
    assert control_verdicts("m", own)[2].endswith(
        "Those answers score 45.0%; its own answers 30.0%."
    )
    named = {**own, "think_follows": 0.25, "think_named": 40}
    assert control_verdicts("m", named)[2].endswith(
        "its own answers 30.0%. Its letter is the option its think names in 25.0% of the 40"
        " answers whose think names one."
    )
    steps = {"n": 8, "centroids": 0.125, "frame": 0.0, "v": 0.5, "signs": 0.25}
    steps |= {"quadrant": 1.0, "option": None}
    assert control_verdicts("m", {**named, "think_steps": steps})[2].endswith(
        "whose think names one. Its direction thinks, step by step, each judged on the think's "
        "own earlier numbers (8 thinks): centroids from its map 12%, frame from its centroids 0%,"
        " v from its centroids 50%, signs from its v and frame 25%, quadrant from its signs 100%."
    )
    assert control_verdicts("m", {**named, "think_steps": {"n": 0}})[2].endswith("names one.")
    blind = {**sees, "map_by_group": {"1-4": group(2.0), "all": group(2.0, cons=0.2)}}
    lines = control_verdicts("m", blind)  # no better than another scene's frames
    assert "maps from the frames? no" in lines[0] and "answers from its maps? no" in lines[1]


def test_each_row_is_scored_once_and_the_file_gives_the_same_summary(qvs, tmp_path, monkeypatch):
    import v2lo_utils.benchmark as bm

    rows = read_jsonl(qvs / "qvs_bench.jsonl")[:12]
    scored, real = [], bm.score_row
    monkeypatch.setattr(bm, "score_row", lambda r, c: scored.append(r["id"]) or real(r, c))
    out = tmp_path / "p.jsonl"
    summary = evaluate_benchmark(
        None, None, rows, qvs, out, n_boot=20, progress=False,
        generate=lambda batch: [r["target"] if i % 2 else "<answer>A</answer>" for i, r in enumerate(batch)],
    )  # fmt: skip
    assert sorted(scored) == sorted(r["id"] for r in rows)  # once each, when generated
    rescored = score_file(rows, out, n_boot=20)  # `v2lo score`: every row scored again
    assert len(scored) == 2 * len(rows)
    for key in SUMMARY_FIELDS:
        assert summary[key] == rescored[key], key
    # records an older scorer wrote (another scored_by, or none) are scored again when resumed
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    for rec in lines[:5]:
        rec.pop("scored_by")
        rec.pop("map_answer", None)
    lines[5]["scored_by"] = 1
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    del scored[:]
    resumed = evaluate_benchmark(
        None, None, rows, qvs, out, n_boot=20, progress=False, generate=lambda batch: 1 / 0
    )
    assert sorted(scored) == sorted(x["id"] for x in lines[:6])
    for key in SUMMARY_FIELDS:
        assert resumed[key] == summary[key], key


def test_grpo_verdict_needs_a_rising_reward_and_a_score_inside_the_sft_interval():
    from v2lo_utils.report import grpo_verdict

    stage = {"before": {"mean_reward": 0.429}, "after": {"mean_reward": 0.491}}
    sft = {"overall": 0.329, "ci95": {"overall": [0.269, 0.397]}}
    text = grpo_verdict("after GRPO", stage, sft, {"overall": 0.319})
    assert text == (
        "after GRPO: better than SFT? yes: held-out paper reward rose, 0.429 -> 0.491; "
        "QVS-Bench-Sim overall 31.9% against the SFT model's 32.9% (26.9-39.7): not below its "
        "95% interval."
    )
    assert "? no:" in grpo_verdict("g", stage, sft, {"overall": 0.25})  # below the interval
    flat = {"before": {"mean_reward": 0.429}, "after": {"mean_reward": 0.425}}
    assert grpo_verdict("g", flat, sft, {"overall": 0.35}).startswith(
        "g: better than SFT? no: held-out paper reward did not rise"
    )
    assert grpo_verdict("g", stage) == (  # without QVS summaries: the reward alone
        "g: better than SFT? yes: held-out paper reward rose, 0.429 -> 0.491."
    )
