"""The v2lo command line."""

import json

from v2lo_utils.cli import main
from v2lo_utils.questions import TASKS


def test_parse_prints_parts_and_reward(tmp_path, capsys):
    f = tmp_path / "c.txt"
    f.write_text(
        '<map>[{"object_name": "sofa", "bbox": [0, 0, 2, 1]}]</map><think>t</think><answer>2.0</answer>'
    )
    assert main(["parse", str(f), "--answer", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format_ok"] and out["answer"] == "2.0"
    assert out["map"] == [{"object_name": "sofa", "bbox": [0.0, 0.0, 2.0, 1.0]}]
    assert out["reward"] == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}


def test_parse_reports_a_bad_map(tmp_path, capsys):
    f = tmp_path / "c.txt"
    f.write_text("<map>[{'object_name': 'sofa'}]</map>")
    main(["parse", str(f)])
    out = json.loads(capsys.readouterr().out)
    assert out["map"] is None and "missing field 'bbox'" in out["map_error"]


def test_parse_names_a_missing_file(tmp_path, capsys):
    assert main(["parse", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt: cannot read" in capsys.readouterr().err


def test_demo_shows_every_task(capsys):
    assert main(["demo", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    for task in TASKS:
        assert f"[{task}]" in out
    assert out.count("paper reward 1.00, benchmark score 1.00") == len(TASKS)
