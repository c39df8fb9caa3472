"""Hostile input (issue 14): each failure F1-F7 and F10 found by a skeptical user, as a test.

F8 (runner parameters), F9 (pool workers of a killed build) and the build fingerprint of F6 are
in tests/test_hostile_runs.py.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paper_reward_reference import reference_score

from v2lo_utils.benchmark import score_row
from v2lo_utils.cli import main
from v2lo_utils.cogmap import (
    FORMAT_RE,
    MAX_COMPLETION_CHARS,
    format_match,
    normalize_tags,
    parse_response,
    tag_contents,
)
from v2lo_utils.dataset import BuildConfig, build_qvs_bench, read_jsonl
from v2lo_utils.errors import DataError, ModelFolderError, PredictionsError, V2loError
from v2lo_utils.evaluation import evaluate_benchmark
from v2lo_utils.exporters import export_rows
from v2lo_utils.loaders import load_benchmark
from v2lo_utils.predictions import read_predictions
from v2lo_utils.rewards import accuracy_reward, compute_score, paper_score
from v2lo_utils.scoring import extract_number, score_answer


@pytest.fixture(scope="module")
def qvs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qvs")
    build_qvs_bench(root, BuildConfig(questions=12, seed=5, image_size=56, workers=1))
    return root


def bench_file(tmp_path, rows, name="bench.jsonl"):
    f = tmp_path / name
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return f


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


# ---------------------------------------------------------------------------------------------
# F1: linear-time parsing

FRAGMENTS = [
    "<map>", "</map>", "<think>", "</think>", "<answer>", "</answer>", "< answer >", "</ answer>",
    "< / map >", "<", ">", "/", " ", "\n", "x", "[", "{", '"', "'", "1.5", ",", "B",
]  # fmt: skip
TAGS = ["map", "think", "answer"]
units = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=8).map("".join)


def _best(fn, text, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t)
    return best


def _everything(text):
    compute_score([{"response": text, "ground_truth": "B"}])
    parse_response(text)
    extract_number(text)


@settings(max_examples=25, deadline=None)
@given(units)
def test_ten_times_longer_looped_output_costs_at_most_thirty_times_the_time(unit):
    n = max(1, 20_000 // len(unit))
    # linear: ~10x; quadratic would be ~100x, and the old regexes were worse here (x8 per
    # doubling, ~1000x). The bound leaves room for a busy machine (a concurrent pip install made
    # 12x fail once at 15.8x), and the best of three tries counts.
    for _ in range(3):
        short, long = _best(_everything, unit * n), _best(_everything, unit * (10 * n))
        if long <= 30 * short + 0.01:
            break
    assert long <= 30 * short + 0.01, (unit, short, long)


@settings(max_examples=300)
@given(units, st.integers(1, 60), st.sampled_from(["B", "2", "x"]))
def test_looped_output_still_gets_the_papers_reward(unit, k, gt):
    text = unit * k
    assert compute_score([{"response": text, "ground_truth": gt}])[0] == reference_score(text, gt)


@pytest.mark.parametrize(
    "text",
    [
        "<map>" + "</map><think></think><answer>" * 400,  # 11.6 KB: 7 s before
        "<answer>" * 8000,  # 64 KB: 7.5 s before
        ("<map>" + "</map><think></think><answer>" * 40_000)[:1_000_000],  # > 180 s before
        "<map>[" + '{"object_name": "chair", "bbox": [0, 0, 1, 1]}, ' * 20_000,
    ],
    ids=["format-loop", "answer-loop", "1MB-loop", "1MB-unclosed-map"],
)
def test_degenerate_completions_are_scored_in_a_moment(text):
    t = time.perf_counter()
    compute_score([{"response": text, "ground_truth": "B"}])
    parse_response(text)
    score_row({"id": "q", "task": "min_distance", "answer": "2.0"}, text)
    assert time.perf_counter() - t < 10  # a ceiling far above linear time (bench_core times it)


@settings(max_examples=500)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join), st.sampled_from(TAGS))
def test_linear_tag_scan_finds_what_the_regex_finds(text, tag):
    pattern = rf"<\s*{tag}\s*>(.*?)<\s*/\s*{tag}\s*>"
    assert list(tag_contents(text, tag)) == re.findall(pattern, text, re.DOTALL)


@settings(max_examples=500)
@given(st.lists(st.sampled_from([*FRAGMENTS, "\t", "\u2003"]), max_size=30).map("".join))
def test_linear_format_rule_is_the_regex(text):
    normalised = normalize_tags(text).strip()
    assert format_match(normalised) == (FORMAT_RE.fullmatch(normalised) is not None)


def test_text_over_the_cap_is_not_parsed():
    text = "<map>[]</map><think>t</think><answer>B</answer>" + " " * MAX_COMPLETION_CHARS
    assert compute_score([{"response": text, "ground_truth": "B"}])[0]["overall"] == 0.0
    r = parse_response(text)
    assert r.cogmap is None and r.answer is None and "longer than" in r.map_error
    assert paper_score(text.strip(), "B")["overall"] == 1.0  # below the cap: the paper's reward


# ---------------------------------------------------------------------------------------------
# F2: errors that say where, as one line


def test_score_names_a_non_utf8_byte(qvs, tmp_path, capsys):
    text = (qvs / "qvs_bench.jsonl").read_bytes()
    lines = text.split(b"\n")
    lines[2] = lines[2].replace(b'"question": "', b'"question": "\xff', 1)
    bad = tmp_path / "bench.jsonl"
    bad.write_bytes(b"\n".join(lines))
    preds = bench_file(tmp_path, [{"id": "x", "completion": ""}], "preds.jsonl")
    assert main(["score", "--benchmark", str(bad), "--predictions", str(preds)]) == 2
    one_line_error(capsys, "bench.jsonl: line 3: not UTF-8")


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "map",
            [{"object_name": "sofa", "bbox": [1, 2]}],
            "row 2: field map: item 1: field 'bbox'",
        ),
        ("answer", "left", "row 2: field 'answer': 'left' is not a finite number"),
    ],
)
def test_score_names_row_and_field_of_a_broken_row(qvs, tmp_path, capsys, field, value, message):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    numerical = [r for r in rows if r["options"] == []]
    rows = [numerical[0], {**numerical[1], field: value}]
    preds = bench_file(tmp_path, [{"id": rows[0]["id"], "completion": ""}], "preds.jsonl")
    argv = ["score", "--benchmark", str(bench_file(tmp_path, rows)), "--predictions", str(preds)]
    assert main(argv) == 2
    one_line_error(capsys, message)
    with pytest.raises(DataError):  # --debug: the traceback, for whoever wants it
        main(["--debug", *argv])


def test_eval_prints_a_data_error_as_one_line(qvs, tmp_path, capsys):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")[:2]
    rows[1]["frames"][0] = "frames/nowhere.png"
    f = bench_file(qvs, rows, "bench_missing_frame.jsonl")  # beside the frames it names
    argv = ["eval", "--benchmark", str(f), "--model", "tiny"]
    assert main([*argv, "--out", str(tmp_path / "p.jsonl")]) == 2
    one_line_error(capsys, "row 2: field 'frames[0]': missing file")


def test_a_corrupt_safetensors_file_is_named(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    from v2lo_utils.models import check_model_folder

    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (tmp_path / "tokenizer.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    save_file({"w": np.zeros((64, 64), dtype=np.float32)}, str(weights))
    assert check_model_folder(tmp_path) == tmp_path
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    with pytest.raises(ModelFolderError, match=r"model\.safetensors: not a readable safetensors"):
        check_model_folder(tmp_path)
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(ModelFolderError, match=r"model\.safetensors: not a readable safetensors"):
        check_model_folder(tmp_path)


@pytest.mark.parametrize("missing", ["target", "frames", "prompt"])
def test_export_names_a_missing_field(qvs, missing):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")[:3]
    del rows[2][missing]
    with pytest.raises(DataError, match=rf"qvs_bench\.jsonl: row 3: field '{missing}': is missing"):
        export_rows(rows, "ms-swift", qvs, source=qvs / "qvs_bench.jsonl")


def test_a_corrupt_parquet_file_is_a_data_error(tmp_path):
    f = tmp_path / "bench.parquet"
    f.write_bytes(b"PAR1 this is no parquet file PAR1")
    with pytest.raises(DataError, match=r"bench\.parquet: not a readable parquet file"):
        load_benchmark(f)


# ---------------------------------------------------------------------------------------------
# F3: a valid JSONL file is read as written


def test_a_raw_line_separator_inside_a_string_is_no_line_break(qvs, tmp_path):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")[:3]
    rows[1]["question"] += "\u2028(raw U+2028)\u0085"
    f = tmp_path / "bench.jsonl"
    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert "\u2028" in f.read_text(encoding="utf-8")
    loaded = load_benchmark(f)
    assert [r["question"] for r in loaded] == [r["question"] for r in rows]


# ---------------------------------------------------------------------------------------------
# F4: wrong input refused at the door


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_frames": "abc"}, "field 'num_frames': must be a positive integer"),
        ({"num_frames": [4]}, "field 'num_frames': must be a positive integer"),
        ({"num_frames": -3}, "field 'num_frames': must be a positive integer"),
        ({"num_frames": 16}, "field 'num_frames': is 16 but the row has"),
        ({"frames": "frames/a.png"}, "field 'frames' must be a list"),
        ({"frames": ["../x.png"]}, "field 'frames[0]': '../x.png' leaves the dataset folder"),
        ({"frames": ["/etc/passwd"]}, "field 'frames[0]': '/etc/passwd' is absolute"),
        ({"answer": "E"}, "field 'answer': E is beyond the row's 4 options"),
    ],
)
def test_wrong_benchmark_rows_are_refused(qvs, tmp_path, change, message):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    mc = next(r for r in rows if r["options"] and r["num_frames"] in (1, 4, 8, 12))
    f = bench_file(
        tmp_path, [rows[0], {**mc, **change}] if mc is not rows[0] else [{**mc, **change}]
    )
    with pytest.raises(
        DataError, match="row [12]: " + message.replace("[", r"\[").replace("]", r"\]")
    ):
        load_benchmark(f)


def test_empty_benchmark_is_refused(tmp_path, capsys):
    f = tmp_path / "bench.jsonl"
    f.write_text("\n\n")
    assert main(["score", "--benchmark", str(f), "--predictions", str(f)]) == 2
    one_line_error(capsys, "bench.jsonl: holds no rows")


@pytest.mark.parametrize(
    "frames, message",
    [
        (["../../etc/passwd"], "leaves the dataset folder"),
        (["/etc/passwd"], "is absolute"),
        ("frames/qvs/frame_00.png", "must be a list of paths"),
    ],
)
def test_export_refuses_frames_outside_the_folder_or_not_a_list(qvs, frames, message):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")[:2]
    rows[1]["frames"] = frames
    with pytest.raises(DataError, match=message):
        export_rows(rows, "easyr1", qvs)


def test_vsi_row_with_a_letter_answer_and_no_options_is_refused(tmp_path):
    row = {"id": 7, "question_type": "object_rel_direction", "question": "Which way?"}
    f = bench_file(tmp_path, [{**row, "ground_truth": "A"}])
    with pytest.raises(
        DataError,
        match=r"row 1: field 'ground_truth': 'A' is not a finite number and the row has no options",
    ):
        load_benchmark(f)
    ok = bench_file(tmp_path, [{**row, "ground_truth": "A", "options": ["A. left", "B. right"]}])
    assert load_benchmark(ok)[0]["kind"] == "multiple_choice"


# ---------------------------------------------------------------------------------------------
# F5: nothing to score is an error


@pytest.mark.parametrize(
    "lines",
    [
        ["{broken", '["no id"]', '{"id": "q", "completion": null}'],
        ['{"id": "nope", "completion": "A"}'],
    ],
    ids=["all-unreadable", "no-id-matches"],
)
def test_score_with_nothing_to_score_fails(qvs, tmp_path, capsys, lines):
    f = tmp_path / "preds.jsonl"
    f.write_text("\n".join(lines) + "\n")
    assert main(["score", "--benchmark", str(qvs), "--predictions", str(f)]) == 2
    one_line_error(capsys, "preds.jsonl: no prediction matches a benchmark id")


# ---------------------------------------------------------------------------------------------
# F6: resume and scoring check what they resume and score


class Targets:
    """A stand-in model: answers each row with its own target, counting the rows it saw."""

    def __init__(self, text=None):
        self.seen: list[str] = []
        self.text = text

    def __call__(self, batch):
        self.seen += [r["id"] for r in batch]
        return [self.text if self.text is not None else r["target"] for r in batch]


def evaluate(rows, root, out, gen, **kw):
    return evaluate_benchmark(
        None, None, rows, root, out, n_boot=5, progress=False, generate=gen, **kw
    )


def test_resume_refuses_another_benchmark_with_the_same_ids(qvs, tmp_path):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    out = tmp_path / "p.jsonl"
    evaluate(rows[:4], qvs, out, Targets())
    other = [{**r, "question": r["question"] + " (another build)"} for r in rows[:6]]
    with pytest.raises(PredictionsError, match=r"4 predictions answer other benchmark rows"):
        evaluate(other, qvs, out, Targets())
    gen = Targets()
    evaluate(other, qvs, out, gen, force=True)  # forced: the changed rows are answered again
    assert sorted(gen.seen) == sorted(r["id"] for r in other)


def test_resume_refuses_other_generation_settings(qvs, tmp_path):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    out = tmp_path / "p.jsonl"
    evaluate(rows[:4], qvs, out, Targets(), max_new_tokens=512, settings={"model": "a"})
    with pytest.raises(PredictionsError, match=r"max_new_tokens: 512 -> 256"):
        evaluate(rows, qvs, out, Targets(), max_new_tokens=256, settings={"model": "a"})
    with pytest.raises(PredictionsError, match=r"model: 'a' -> 'b'"):
        evaluate(rows, qvs, out, Targets(), max_new_tokens=512, settings={"model": "b"})
    gen = Targets()
    evaluate(rows, qvs, out, gen, max_new_tokens=512, settings={"model": "a"})  # same: resumes
    assert sorted(gen.seen) == sorted(r["id"] for r in rows[4:])


def test_an_emptied_file_takes_new_settings(qvs, tmp_path):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")[:3]
    out = tmp_path / "p.jsonl"
    evaluate(rows, qvs, out, Targets(), max_new_tokens=512)
    out.write_text("")  # the predictions deleted, their settings file left behind
    evaluate(rows, qvs, out, Targets(), max_new_tokens=256)
    assert json.loads((tmp_path / "p.jsonl.meta.json").read_text())["max_new_tokens"] == 256


def test_a_foreign_file_is_not_resumed_without_force(qvs, tmp_path):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")
    out = bench_file(tmp_path, [{"id": rows[0]["id"], "completion": "x"}], "p.jsonl")
    with pytest.raises(PredictionsError, match="made without a settings record"):
        evaluate(rows, qvs, out, Targets())
    evaluate(rows, qvs, out, Targets(), force=True)


def test_predictions_for_another_seed_do_not_score_silently(tmp_path, capsys):
    seed0, seed1 = tmp_path / "s0", tmp_path / "s1"
    for root, seed in ((seed0, 0), (seed1, 1)):
        build_qvs_bench(root, BuildConfig(questions=6, seed=seed, image_size=56, workers=1))
    rows0 = read_jsonl(seed0 / "qvs_bench.jsonl")
    out = tmp_path / "p.jsonl"
    evaluate(rows0, seed0, out, Targets())
    capsys.readouterr()  # the builds' progress bars
    ids0 = {r["id"] for r in rows0}
    common = ids0 & {r["id"] for r in read_jsonl(seed1 / "qvs_bench.jsonl")}
    assert common  # the same ids, other questions
    argv = ["score", "--benchmark", str(seed1), "--predictions", str(out), "--bootstrap", "5"]
    assert main(argv) == 2
    one_line_error(capsys, "predictions were made for other benchmark rows with the same ids")
    assert main([*argv, "--force"]) == 0
    assert main(["score", "--benchmark", str(seed0), "--predictions", str(out)]) == 0


# ---------------------------------------------------------------------------------------------
# F7: one completion never blocks an evaluation


def test_a_lone_surrogate_is_written_and_read_back(qvs, tmp_path):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")[:4]
    out = tmp_path / "p.jsonl"
    text = '<map>[{"object_name": "sofa\ud800", "bbox": [0, 0, 1, 1]}]</map><answer>A</answer>'
    summary = evaluate(rows, qvs, out, Targets(text))
    assert summary["counts"]["missing"] == 0
    assert all(r["completion"] == text for r in read_predictions(out).records.values())
    gen = Targets()
    evaluate(rows, qvs, out, gen)
    assert gen.seen == []  # nothing lost, nothing redone


def test_a_row_that_cannot_be_scored_is_recorded_once(qvs, tmp_path):
    rows = read_jsonl(qvs / "qvs_bench.jsonl")[:3]
    rows[1]["map"] = [{"object_name": "sofa"}]  # broken: past no loader, straight from code
    out = tmp_path / "p.jsonl"
    gen = Targets()
    summary = evaluate(rows, qvs, out, gen)
    assert summary["counts"]["scoring_errors"] == 1 and len(gen.seen) == 3
    failed = read_predictions(out).records[rows[1]["id"]]
    assert failed["score"] == 0.0 and "missing field 'bbox'" in failed["scoring_error"]
    evaluate(rows, qvs, out, gen)
    assert len(gen.seen) == 3  # never generated again


# ---------------------------------------------------------------------------------------------
# F10: small disagreements


def test_reward_and_benchmark_read_numbers_alike():
    for text, value in (("1_2", 12.0), (" 3 ", 3.0), ("2.5 m", 2.5), ("\u22123", -3.0)):
        completion = f"<answer>{text}</answer>"
        assert extract_number(completion) == value
    # '1_2' is 12 for Python's float(), which the paper's reward uses: the benchmark agrees
    assert paper_score("<answer>1_2</answer>", "12")["accuracy"] == 1.0
    assert score_answer("min_distance", "<answer>1_2</answer>", "12").score == 1.0
    # a unicode minus is never dropped: -3 scores nothing against 3, in both
    assert paper_score("<answer>\u22123</answer>", "3")["accuracy"] == 0.0
    assert score_answer("min_distance", "<answer>\u22123</answer>", "3").score == 0.0


def test_non_string_responses_score_zero():
    for response in (None, 3, ["<answer>B</answer>"], {"text": "B"}):
        out = compute_score([{"response": response, "ground_truth": "B"}])[0]
        assert out == {"overall": 0.0, "format": 0.0, "accuracy": 0.0}
    assert accuracy_reward([7, None], answer=["B", "B"]) == [0.0, 0.0]


def test_a_missing_ground_truth_is_an_error_not_full_marks():
    batch = [{"response": "<answer>B</answer>", "ground_truth": "B"}]
    batch.append({"response": "<answer>None</answer>", "ground_truth": None})
    with pytest.raises(ValueError, match=r"reward_inputs\[1\]: ground_truth is None"):
        compute_score(batch)


def test_input_errors_are_one_family():
    for cls in (DataError, ModelFolderError, PredictionsError):
        assert issubclass(cls, V2loError) and issubclass(cls, ValueError)


# ---------------------------------------------------------------------------------------------
# Validation at the door, as a property: any broken field is refused with a DataError, or the row
# is accepted and then scores without an error


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(-1, 3), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just([{"object_name": "sofa", "bbox": [0, 0, 1, 1]}]),
)
FIELDS = ["id", "task", "question", "options", "answer", "num_frames", "frames", "map", "params"]


@settings(max_examples=300)
@given(st.data())
def test_a_broken_field_is_refused_or_scored(qvs, data):
    import tempfile

    from v2lo_utils.benchmark import score_benchmark

    rows = read_jsonl(qvs / "qvs_bench.jsonl")[:2]
    row = dict(rows[data.draw(st.integers(0, 1))])
    for name in data.draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        if name == "params" and data.draw(st.booleans()):  # one key lost or made junk
            key = data.draw(st.sampled_from(sorted(row["params"])))
            row["params"] = {k: v for k, v in row["params"].items() if k != key}
            if data.draw(st.booleans()):
                row["params"][key] = data.draw(junk)
        else:
            row[name] = data.draw(junk)
    with tempfile.TemporaryDirectory() as tmp:
        f = bench_file(__import__("pathlib").Path(tmp), [row])
        try:
            loaded = load_benchmark(f)
        except DataError as err:
            assert "bench.jsonl: row 1" in str(err) or "bench.jsonl:" in str(err)
            return
    preds = {loaded[0]["id"]: {"completion": rows[0]["target"]}}
    summary = score_benchmark(loaded, preds, n_boot=2)
    assert summary["counts"]["scoring_errors"] == 0 and 0.0 <= summary["overall"] <= 1.0
