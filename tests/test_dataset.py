"""Dataset builder, QVS-Bench-Sim, exporters, loaders and the AI2-THOR adapter."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from v2lo_utils import dataset as dsmod
from v2lo_utils.cogmap import CogMap, parse_map, parse_response
from v2lo_utils.dataset import (
    BuildConfig,
    Dataset,
    build_qvs_bench,
    build_training_set,
    read_jsonl,
)
from v2lo_utils.exporters import export_rows
from v2lo_utils.loaders import DataError, check_frames, load_benchmark
from v2lo_utils.questions import TASKS, solve
from v2lo_utils.thor import thor_map, thor_map_from_file

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def train_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    build_training_set(root, BuildConfig(scenes=10, seed=3, image_size=64, workers=1))
    return Dataset.load(root)


def test_qvs_acceptance(tmp_path):
    """`v2lo data qvs --out DIR --questions 500 --seed 0`: exact shares, answers from each row's
    own map, every frame on disk."""
    out = tmp_path / "q"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "v2lo_utils.cli",
            "data",
            "qvs",
            "--out",
            str(out),
            "--questions",
            "500",
            "--seed",
            "0",
        ],
        check=True,
        capture_output=True,
    )
    rows = read_jsonl(out / "qvs_bench.jsonl")
    assert len(rows) == 500 and len({r["id"] for r in rows}) == 500
    assert Counter(r["task"] for r in rows) == {
        "vertical_direction": 126,
        "horizontal_direction": 126,
        "min_distance": 63,
        "object_size": 59,
        "relative_direction": 63,
        "object_count": 63,
    }
    assert Counter(r["num_frames"] for r in rows) == {1: 101, 4: 101, 8: 101, 12: 101, 16: 96}
    for r in rows:
        assert solve(r["task"], r["params"], CogMap.from_json(r["map"])) == r["answer"], r["id"]
        assert len(r["frames"]) == r["num_frames"] and r["frames"][0].endswith("frame_00.png")
        assert all((out / f).is_file() for f in r["frames"])
    check_frames(rows, out, out / "qvs_bench.jsonl")
    # held out: no QVS scene is a training scene
    assert all(r["scene_id"].startswith("qvs") for r in rows)


def test_training_rows(train_ds):
    rows = train_ds.rows["train"] + train_ds.rows["val"]
    assert train_ds.rows["val"] and train_ds.rows["train"]
    assert not {r["scene_id"] for r in train_ds.rows["train"]} & {
        r["scene_id"] for r in train_ds.rows["val"]
    }
    assert set(Counter(r["task"] for r in rows)) == set(TASKS)
    assert set(Counter(r["num_frames"] for r in rows)) == {1, 4, 8, 12, 16}
    for r in rows:
        gt = CogMap.from_json(r["map"])
        assert solve(r["task"], r["params"], gt) == r["answer"]
        target = parse_response(r["target"])
        assert target.format_ok and target.cogmap == gt.rounded()
        assert len(r["visibility"]) == len(r["map"]) and all(
            len(v) == r["num_frames"] for v in r["visibility"]
        )
        if r["task"] != "object_count":  # named objects are seen in a sampled frame
            assert all(max(v) >= train_ds.min_pixels for v in r["visibility"])
        assert r["prompt"].endswith("\n".join([r["question"], *r["options"]]))


class Interrupted(Exception):
    pass


def test_build_resumes_without_redoing_finished_scenes(tmp_path, monkeypatch):
    cfg = BuildConfig(scenes=4, seed=5, image_size=48, workers=1)
    real = dsmod._train_unit
    calls, interrupted = [], []

    def flaky(args):
        calls.append(args[2])
        if args[2].endswith("s00002") and not interrupted:
            interrupted.append(args[2])
            raise Interrupted  # interrupted in the third scene, once
        return real(args)

    monkeypatch.setattr(dsmod, "_train_unit", flaky)
    with pytest.raises(Interrupted):
        build_training_set(tmp_path, cfg)
    shards = sorted(p.name for p in (tmp_path / "shards").glob("*.jsonl"))
    assert shards == ["train5-s00000.jsonl", "train5-s00001.jsonl"]
    stamps = {p: (tmp_path / "shards" / p).stat().st_mtime_ns for p in shards}
    calls.clear()
    counts = build_training_set(tmp_path, cfg)
    assert calls == ["train5-s00002", "train5-s00003"]  # finished scenes are not redone
    assert all((tmp_path / "shards" / p).stat().st_mtime_ns == t for p, t in stamps.items())
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(dsmod, "_train_unit", real)
    assert build_training_set(fresh, cfg) == counts
    assert (fresh / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()


def test_exports_follow_spec_section_5(train_ds):
    rows = train_ds.rows["train"][:5]
    k = [r["num_frames"] for r in rows]
    swift = export_rows(rows, "ms-swift", train_ds.root)
    for s, r, n in zip(swift, rows, k, strict=True):
        user, assistant = s["messages"]
        assert user["role"] == "user" and user["content"] == "<image>" * n + r["prompt"]
        assert assistant == {"role": "assistant", "content": r["target"]}
        assert len(s["images"]) == n and all(
            Path(p).is_absolute() and Path(p).is_file() for p in s["images"]
        )
    e = export_rows(rows, "easyr1", train_ds.root)[0]
    assert (
        e["question"].startswith("<image>") and e["answer"] == rows[0]["answer"] and e["image_path"]
    )
    sft = export_rows(rows, "trl-sft", train_ds.root)[0]
    parts = sft["messages"][0]["content"]
    assert parts[: k[0]] == [{"type": "image"}] * k[0] and parts[-1]["text"] == rows[0]["prompt"]
    assert sft["messages"][1]["content"][0]["text"] == rows[0]["target"]
    grpo = export_rows(rows, "trl-grpo", train_ds.root, relative_to=train_ds.root)[0]
    assert {"prompt", "images", "answer", "task", "map", "params"} <= set(grpo)
    assert grpo["images"] == rows[0]["frames"]
    with pytest.raises(ValueError, match="unknown export format"):
        export_rows(rows, "llava", train_ds.root)


def test_grid_variant_targets(train_ds):
    rows = train_ds.rows["train"][:30]
    for r, g in zip(rows, export_rows(rows, "ms-swift", train_ds.root, grid=10), strict=True):
        target = g["messages"][1]["content"]
        assert target.startswith("<map>Establish a 10 x 10 grid of ")
        assert '"cell": [' in target and parse_response(target).format_ok
        grid = CogMap.from_json(r["map"]).to_grid(10, tuple(r["map_extent"]))
        assert parse_response(target).answer == (solve(r["task"], r["params"], grid) or "")


def test_load_vsi_layout(tmp_path):
    f = tmp_path / "vsi.jsonl"
    rows = [
        {
            "id": 1,
            "dataset": "arkitscenes",
            "scene_name": "41069025",
            "question_type": "object_counting",
            "question": "How many chair(s) are in this room?",
            "options": None,
            "ground_truth": "4",
        },
        {
            "id": 2,
            "dataset": "scannet",
            "scene_name": "scene0011_00",
            "question_type": "object_rel_direction_easy",
            "question": "If I am standing by the sofa and facing the tv, is the lamp to my left or right?",
            "options": ["A. left", "B. right"],
            "ground_truth": "B",
        },
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    got = load_benchmark(f)
    assert [r["kind"] for r in got] == ["numerical", "multiple_choice"]
    assert got[0]["task"] == "object_counting" and got[1]["answer"] == "B"


def test_loaders_name_file_row_and_field(tmp_path, train_ds):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"id": "a", "task": "min_distance", "question": "q"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl: row 1: field 'answer' is missing"):
        load_benchmark(f)
    f.write_text(json.dumps({"id": "a", "task": "height", "question": "q", "answer": "1"}))
    with pytest.raises(DataError, match=r"row 1: field 'task': unknown task"):
        load_benchmark(f)
    f.write_text('{"id": "a"}\n{oops')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: not valid JSON"):
        load_benchmark(f)
    rows = [dict(r) for r in train_ds.rows["val"][:2]]
    rows[1]["frames"] = [*rows[1]["frames"][:-1], "frames/nope/frame_99.png"]
    with pytest.raises(
        DataError, match=r"val\.jsonl: row 2: field 'frames\[\d+\]': missing file .*frame_99\.png"
    ):
        check_frames(rows, train_ds.root, train_ds.root / "val.jsonl")


def test_thor_fixture_to_map():
    m = thor_map_from_file(FIXTURES / "ai2thor_metadata.json")
    assert m.names() == ["sofa", "television", "armchair"]  # the pen is no furniture
    sofa, tv, chair = (o.bbox for o in m.objects)
    assert sofa == pytest.approx((-2.0, 2.05, 0.0, 2.95))  # left-front of an agent facing +x
    assert tv == pytest.approx((-0.5, -1.4, 0.5, -1.2))  # behind it
    assert chair == pytest.approx((1.1, 0.6, 1.9, 1.4))  # right-front
    assert (
        solve(
            "relative_direction",
            {
                "objects": ["armchair", "sofa"],
                "options": ["Left-Front", "Right-Front", "Left-Back", "Right-Back"],
            },
            m,
        )
        == "D"
    )
    assert parse_map(json.dumps(m.to_json())) == m


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["objects"][0]["axisAlignedBoundingBox"]["size"].update(x="wide"),
            r"objects\[0\]: field 'axisAlignedBoundingBox\.size\.x'",
        ),
        (
            lambda d: d["objects"][1].pop("axisAlignedBoundingBox"),
            r"objects\[1\]: field 'axisAlignedBoundingBox\.center\.x' is missing",
        ),
        (lambda d: d["agent"]["rotation"].update(y=37.0), r"field 'agent\.rotation\.y' = 37\.0"),
        (lambda d: d["agent"].pop("position"), r"field 'agent\.position\.x' is missing"),
        (lambda d: d.update(objects="none"), r"field 'objects' must be a list"),
    ],
)
def test_corrupted_thor_metadata_names_file_and_field(tmp_path, mutate, message):
    doc = json.loads((FIXTURES / "ai2thor_metadata.json").read_text())
    mutate(doc)
    f = tmp_path / "meta.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"meta\.json: .*{message}|meta\.json: {message}"):
        thor_map_from_file(f)
    with pytest.raises(DataError, match=r"broken\.json: not valid JSON"):
        (tmp_path / "broken.json").write_text("{")
        thor_map_from_file(tmp_path / "broken.json")


def test_collect_thor_frames_says_what_is_missing(tmp_path):
    try:  # ai2thor is not a dependency: without it the guard must say what to install
        import ai2thor  # noqa: F401
    except ImportError:
        from v2lo_utils.thor import collect_thor_frames

        with pytest.raises(RuntimeError, match="pip install ai2thor"):
            collect_thor_frames("FloorPlan201", tmp_path)
    else:
        pytest.skip("ai2thor is installed; the real collection needs a display or GPU")


def test_thor_map_requires_metadata_object():
    with pytest.raises(DataError, match="expected an AI2-THOR metadata object"):
        thor_map([], "x.json")


def test_a_build_never_mixes_data_versions(tmp_path):
    cfg = BuildConfig(scenes=1, seed=0, image_size=32, workers=1)
    build_training_set(tmp_path / "t", cfg)
    (tmp_path / "t" / "build.json").write_text('{"kind": "training", "data_version": 1}')
    with pytest.raises(ValueError, match=r"t: holds a training build of data version 1"):
        build_training_set(tmp_path / "t", cfg)
    with pytest.raises(ValueError, match=r"holds a training build"):
        build_qvs_bench(tmp_path / "t", cfg)
    (tmp_path / "old" / "shards").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"old: holds shards of an older data version"):
        build_training_set(tmp_path / "old", cfg)


def test_target_maps_follow_the_question_order(train_ds):
    from v2lo_utils.questions import question_names

    for r in train_ds.rows["train"]:
        names = [o["object_name"] for o in r["map"]]
        wanted = list(dict.fromkeys(question_names(r["task"], r["params"])))
        assert list(dict.fromkeys(names)) == wanted


def test_later_views_give_the_camera_motion_an_object_only_later_frames_show_needs(train_ds):
    import math

    from v2lo_utils.dataset import later_objects

    rows = train_ds.rows["train"]
    found = 0
    for row in rows:
        scene, _ = train_ds.scene(row["scene_id"])
        clip = scene.clip(row["clip_id"])
        cams = scene.cameras_in_map(clip, row["frame_indices"])
        views = train_ds.later_views(row)
        assert len(views) == len(row["map"]) == len(row["visibility"])
        for pixels, view in zip(row["visibility"], views, strict=True):
            if pixels[0] > 0 or not any(pixels):
                assert view is None
                continue
            found += 1
            assert pixels[view["frame"]] > 0 and not any(pixels[: view["frame"]])
            # the heading from the frame's forward direction in the map frame (ccw from +y)
            fx, fy = cams[view["frame"]][1]
            assert view["heading"] == round(math.degrees(math.atan2(-fx, fy)) / 90) % 4
            turn = clip.poses[-1].yaw - clip.poses[0].yaw
            assert view["turn"] == (1 if turn > 0 else -1)
    assert found > 10
    items = later_objects(train_ds, rows)
    assert len(items) == found
    cue, center = items[0]
    assert set(cue) == {"frame", "turn", "heading", "num_frames"} and len(center) == 2
