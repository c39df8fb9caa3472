"""Prediction files of lmms-eval and VLMEvalKit score as the project's own JSONL does."""

from __future__ import annotations

import json

import pytest

from v2lo_utils.cli import main
from v2lo_utils.dataset import BuildConfig, build_qvs_bench
from v2lo_utils.harnesses import detect_format, read_harness, write_harness
from v2lo_utils.loaders import load_benchmark
from v2lo_utils.predictions import append_records


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("qvs")
    build_qvs_bench(root, BuildConfig(questions=24, seed=7, image_size=56, workers=1))
    rows = load_benchmark(root)
    # a model that answers two questions in three right, with a newline and a tab inside
    records = {
        r["id"]: {
            "id": r["id"],
            "completion": r["target"]
            if i % 3
            else "<map>[]</map>\n<think>\tno</think><answer>B</answer>",
        }
        for i, r in enumerate(rows)
    }
    own = root / "own.jsonl"
    append_records(own, records.values())
    return root, rows, records, own


def score(root, path, fmt="auto") -> dict:
    out = path.with_suffix(".summary.json")
    argv = ["score", "--benchmark", str(root), "--predictions", str(path), "--json", str(out)]
    assert main([*argv, "--format", fmt, "--bootstrap", "5"]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("name, fmt", [("samples.jsonl", "lmms-eval"), ("preds.tsv", "vlmevalkit"),
                                       ("preds.xlsx", "vlmevalkit")])  # fmt: skip
def test_harness_files_score_as_the_projects_own(bench, tmp_path, name, fmt):
    root, rows, records, own = bench
    path = write_harness(tmp_path / name, rows, records, fmt)
    assert detect_format(path) == fmt
    theirs, ours = score(root, path), score(root, own)
    assert theirs["by_task"] == ours["by_task"] and theirs["overall"] == ours["overall"]
    assert theirs["counts"]["missing"] == 0 and theirs["counts"]["bad_lines"] == 0


def test_lmms_eval_lines_as_the_harness_writes_them(bench, tmp_path):
    """doc_id is the row's position unless the logged doc carries the id; responses may be nested."""
    _root, rows, _, _ = bench
    lines = [
        {"doc_id": 0, "target": rows[0]["answer"], "filtered_resps": [[rows[0]["target"]]]},
        {"doc_id": 99, "doc": {"id": rows[1]["id"]}, "resps": [[rows[1]["target"]]]},
        {"doc_id": 5000, "filtered_resps": ["<answer>A</answer>"]},  # no such row
        {"doc_id": 2},  # no response
    ]
    f = tmp_path / "samples_qvs.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines) + "[" * 100_000 + "\n")
    report = read_harness(f, rows)
    assert set(report.records) == {rows[0]["id"], rows[1]["id"]}
    assert report.records[rows[1]["id"]]["completion"] == rows[1]["target"]
    assert report.bad_lines == [3, 4, 5]  # line 5: nested too deeply to parse, not a crash


def test_vlmevalkit_index_is_an_id_or_a_position(bench, tmp_path):
    _root, rows, _, _ = bench
    f = tmp_path / "model_QVS.tsv"
    f.write_text(f"index\tprediction\n0\t<answer>A</answer>\n{rows[3]['id']}\t<answer>2</answer>\n")
    report = read_harness(f, rows)
    assert set(report.records) == {rows[0]["id"], rows[3]["id"]}


def test_a_harness_file_matching_nothing_is_an_error(bench, tmp_path, capsys):
    root, _rows, _, _ = bench
    f = tmp_path / "samples.jsonl"
    f.write_text(json.dumps({"doc_id": 10_000, "filtered_resps": ["x"]}) + "\n")
    assert main(["score", "--benchmark", str(root), "--predictions", str(f)]) == 2
    assert "no prediction matches a benchmark id" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["preds.xlsx", "preds.tsv"])
def test_vlmevalkit_tables_read_back_as_vlmevalkit_loads_them(bench, tmp_path, name):
    """VLMEvalKit's `load` reads prediction tables with pandas (read_excel / read_csv with tabs)."""
    import pandas as pd

    _, rows, records, _ = bench
    path = write_harness(tmp_path / name, rows, records, "vlmevalkit")
    table = pd.read_excel(path) if name.endswith(".xlsx") else pd.read_csv(path, sep="\t")
    assert list(table.columns[:1]) == ["index"] and "prediction" in table.columns
    assert list(table["prediction"]) == [records[r["id"]]["completion"] for r in rows]
