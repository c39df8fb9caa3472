"""Dataset builder: simulator scenes -> rendered clips -> question rows with map/think/answer targets.

Layout of a dataset folder (all paths in rows are relative to it)::

    frames/<scene_id>/<clip_id>/frame_00.png ...   16 frames per clip
    scenes/<scene_id>.json                        scene, clips and per-frame visible pixels
    shards/<unit>.jsonl                           rows of one finished unit (scene or QVS group)
    train.jsonl, val.jsonl | qvs_bench.jsonl      merged rows
    manifest.json                                 what was built, with which settings

A unit's shard is written last and atomically, so an interrupted build resumes by skipping the
units whose shard exists. Units run on a process pool (both cores by default) with a progress bar.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .cogmap import CogMap
from .errors import DataError
from .jsonl import atomic_write
from .loaders import read_jsonl_rows
from .prompting import user_prompt
from .questions import (
    QVS_FRAME_SHARES,
    QVS_TASK_SHARES,
    TASKS,
    Question,
    allocate,
    generate_question,
    make_target,
    relevant_map,
)
from .renderer import Renderer
from .schema import check_dataset_row
from .simulator import Scene, make_scene, sample_indices
from .workers import parent_bound_pool

DATA_VERSION = 4  # bump when rows or targets change: a build never mixes versions
FRAME_COUNTS = (1, 4, 8, 12, 16)
CLIP_FRAMES = 16
MIN_VISIBLE_FRACTION = 0.0006  # of the frame's pixels: 30 px at 224 x 224


@dataclass(frozen=True)
class BuildConfig:
    """Settings of a build; stored in the manifest."""

    scenes: int = 20
    seed: int = 0
    image_size: int = 224
    clips_per_scene: int = 1
    frame_counts: tuple[int, ...] = FRAME_COUNTS
    tasks: tuple[str, ...] = tuple(TASKS)
    val_fraction: float = 0.1
    workers: int = 2
    questions: int = 500  # QVS-Bench-Sim size
    qvs_group: int = 5  # QVS questions planned per scene attempt


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a line that is not UTF-8 or not JSON raises DataError naming
    the file and line (:func:`~v2lo_utils.loaders.read_jsonl_rows`)."""
    return read_jsonl_rows(Path(path))


# ---------------------------------------------------------------------------------------------
# Rendering a scene


@dataclass
class RenderedClip:
    clip_id: str
    frames: list[str]  # paths relative to the dataset folder
    pixels: np.ndarray  # (frames, objects) visible pixel counts
    gt: CogMap  # every object, map frame of the first camera
    extent: tuple[float, float, float, float]  # the room's floor in that frame (m)


def render_scene(scene: Scene, root: Path, renderer: Renderer) -> list[RenderedClip]:
    """Render every clip of ``scene`` to PNG files under ``root`` and record visibility."""
    out = []
    for clip in scene.clips:
        rel = Path("frames") / scene.scene_id / clip.clip_id
        (root / rel).mkdir(parents=True, exist_ok=True)
        paths, pixels = [], []
        for i, pose in enumerate(clip.poses):
            frame = renderer.render(scene, pose)
            name = str(rel / f"frame_{i:02d}.png")
            Image.fromarray(frame.image).save(root / name, compress_level=1)
            paths.append(name)
            pixels.append(frame.visible_pixels)
        out.append(
            RenderedClip(
                clip.clip_id, paths, np.stack(pixels), scene.gt_map(clip), scene.map_extent(clip)
            )
        )
    scene_doc = scene.to_json()
    for doc, rc in zip(scene_doc["clips"], out, strict=True):
        doc["visible_pixels"] = rc.pixels.tolist()
    atomic_write(root / "scenes" / f"{scene.scene_id}.json", json.dumps(scene_doc))
    return out


def visible_names(rc: RenderedClip, k: int, min_pixels: int) -> set[str]:
    """Names of objects seen (at least ``min_pixels``) in one of the k sampled frames."""
    idx = sample_indices(len(rc.frames), k)
    seen = rc.pixels[idx].max(axis=0) >= min_pixels
    return {o.name for o, s in zip(rc.gt.objects, seen, strict=True) if s}


def make_row(row_id: str, scene: Scene, rc: RenderedClip, k: int, q: Question, split: str) -> dict:
    """One dataset row (the schema every later stage reads)."""
    idx = sample_indices(len(rc.frames), k)
    # the question's objects in target order, as indices into the clip's objects
    shown = [rc.gt.objects.index(o) for o in relevant_map(q.task, q.params, rc.gt)]
    return {
        "id": row_id,
        "split": split,
        "scene_id": scene.scene_id,
        "clip_id": rc.clip_id,
        "task": q.task,
        "question": q.text,
        "options": q.lettered_options(),
        "answer": q.answer,
        "params": q.params,
        "prompt": user_prompt(q),
        "frames": [rc.frames[i] for i in idx],
        "frame_indices": idx,
        "num_frames": k,
        "map": [rc.gt.objects[i].to_json() for i in shown],
        "target": make_target(q, rc.gt),
        "map_extent": list(rc.extent),
        "visibility": [[int(rc.pixels[f, i]) for f in idx] for i in shown],
    }


# ---------------------------------------------------------------------------------------------
# Units of work (run in worker processes)


def _min_pixels(cfg: BuildConfig) -> int:
    return max(1, round(MIN_VISIBLE_FRACTION * cfg.image_size**2))


def _train_unit(args: tuple[BuildConfig, str, str, int]) -> int:
    cfg, root, scene_id, index = args
    root_p = Path(root)
    scene = make_scene(scene_id, cfg.seed, n_clips=cfg.clips_per_scene, n_frames=CLIP_FRAMES)
    split = "val" if _is_val(index, cfg.val_fraction) else "train"
    rng = random.Random(f"v2lo-questions:{cfg.seed}:{scene_id}")
    rows = []
    for rc in render_scene(scene, root_p, Renderer(cfg.image_size, cfg.image_size)):
        for k in cfg.frame_counts:
            seen = visible_names(rc, k, _min_pixels(cfg))
            for task in cfg.tasks:
                q = generate_question(task, rc.gt, rng, visible=seen)
                if q is not None:
                    rid = f"{scene_id}-{rc.clip_id}-f{k:02d}-{task}"
                    rows.append(make_row(rid, scene, rc, k, q, split))
    return write_jsonl(root_p / "shards" / f"{scene_id}.jsonl", rows)


def _is_val(index: int, fraction: float) -> bool:
    if fraction <= 0:
        return False
    period = max(2, round(1 / fraction))
    return index % period == period - 1


def qvs_plan(n: int, seed: int) -> list[tuple[str, int]]:
    """The (task, frame count) of every QVS-Bench-Sim question: exact shares, shuffled by seed."""
    rng = random.Random(f"v2lo-qvs-plan:{seed}")
    tasks = [t for t, c in allocate(n, QVS_TASK_SHARES).items() for _ in range(c)]
    frames = [k for k, c in allocate(n, QVS_FRAME_SHARES).items() for _ in range(c)]
    rng.shuffle(tasks)
    rng.shuffle(frames)
    return list(zip(tasks, frames, strict=True))


MAX_QVS_ATTEMPTS = 40


def _qvs_unit(args: tuple[BuildConfig, str, int, list[tuple[int, str, int]]]) -> int:
    """Fill a group of planned slots, trying fresh scenes until every slot has a question."""
    cfg, root, group, slots = args
    root_p = Path(root)
    renderer = Renderer(cfg.image_size, cfg.image_size)
    pending = list(slots)
    rows = []
    for attempt in range(MAX_QVS_ATTEMPTS):
        if not pending:
            break
        scene_id = f"qvs{cfg.seed}-g{group:04d}-a{attempt:02d}"
        scene = make_scene(scene_id, cfg.seed, n_clips=1, n_frames=CLIP_FRAMES)
        rc = render_scene(scene, root_p, renderer)[0]
        rng = random.Random(f"v2lo-qvs-questions:{cfg.seed}:{scene_id}")
        still = []
        for slot, task, k in pending:
            q = generate_question(task, rc.gt, rng, visible=visible_names(rc, k, _min_pixels(cfg)))
            if q is None:
                still.append((slot, task, k))
            else:
                rows.append(make_row(f"qvs-{slot:04d}", scene, rc, k, q, "qvs"))
        pending = still
    if pending:
        raise RuntimeError(f"QVS group {group}: no well-posed question for slots {pending}")
    used = {r["scene_id"] for r in rows}
    for attempt in range(MAX_QVS_ATTEMPTS):  # drop the frames of scenes no question uses
        scene_id = f"qvs{cfg.seed}-g{group:04d}-a{attempt:02d}"
        if scene_id not in used and (root_p / "scenes" / f"{scene_id}.json").exists():
            shutil.rmtree(root_p / "frames" / scene_id, ignore_errors=True)
            (root_p / "scenes" / f"{scene_id}.json").unlink()
    rows.sort(key=lambda r: r["id"])
    return write_jsonl(root_p / "shards" / f"qvs-g{group:04d}.jsonl", rows)


def _run_units(
    fn: Callable, units: Sequence[tuple], names: Sequence[str], root: Path, workers: int, desc: str
) -> None:
    from tqdm.auto import tqdm

    todo = [
        (u, n)
        for u, n in zip(units, names, strict=True)
        if not (root / "shards" / f"{n}.jsonl").exists()
    ]
    bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=desc, unit="unit")
    if workers <= 1 or len(todo) <= 1:
        for u, _ in todo:
            fn(u)
            bar.update()
    else:
        with parent_bound_pool(workers) as pool:
            for _ in pool.map(fn, [u for u, _ in todo]):
                bar.update()
    bar.close()


# settings that do not change a unit's rows or frames, per build kind: training units depend on
# their index, not on how many scenes the build has (a resume may add scenes); the QVS-Bench-Sim
# plan depends on the question count and seed, not on the training-set settings
_NOT_STAMPED = {
    "training": {"workers", "scenes", "questions", "qvs_group"},
    "qvs_bench": {"workers", "scenes", "clips_per_scene", "frame_counts", "tasks", "val_fraction"},
}


def _stamp_settings(kind: str, cfg: BuildConfig) -> dict:
    """The settings of ``cfg`` that change the rows or frames of a ``kind`` build, as JSON values."""
    skip = _NOT_STAMPED.get(kind, {"workers"})
    return json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in skip}))


def _claim(root: Path, kind: str, cfg: BuildConfig) -> None:
    """Mark ``root`` as a build of this kind, data version and settings; refuse to resume a build
    that differs in any of them (its finished units would be mixed with new ones)."""
    stamp = root / "build.json"
    settings = _stamp_settings(kind, cfg)
    if stamp.exists():
        try:
            found = json.loads(stamp.read_text())
        except json.JSONDecodeError as err:
            raise DataError(
                f"{stamp}: not valid JSON ({err.msg}); use another folder or delete it"
            ) from err
        if not isinstance(found, dict):
            raise DataError(f"{stamp}: not a build stamp; use another folder or delete it")
        if (found.get("kind"), found.get("data_version")) != (kind, DATA_VERSION):
            raise DataError(
                f"{root}: holds a {found.get('kind')} build of data version {found.get('data_version')}; "
                f"this is a {kind} build of version {DATA_VERSION}: use another folder or delete it"
            )
        old = found.get("settings")
        if not isinstance(old, dict):
            raise DataError(
                f"{root}: holds a {kind} build that does not record its settings (image size, "
                "seed, ...), so it cannot be resumed safely: use another folder or delete it"
            )

        def show(doc: dict, key: str) -> str:
            return json.dumps(doc[key]) if key in doc else "(unset)"

        differ = [
            f"{k} {show(old, k)} -> {show(settings, k)}"
            for k in sorted(set(old) | set(settings))
            if k not in old or k not in settings or old[k] != settings[k]
        ]
        if differ:
            raise DataError(
                f"{root}: holds a {kind} build made with other settings ({'; '.join(differ)}); "
                "resuming would mix both: use the same settings, another folder, or delete it"
            )
    elif (root / "shards").exists():
        raise DataError(
            f"{root}: holds shards of an older data version: use another folder or delete it"
        )
    else:
        doc = {"kind": kind, "data_version": DATA_VERSION, "settings": settings}
        atomic_write(stamp, json.dumps(doc))


def _write_manifest(root: Path, kind: str, cfg: BuildConfig, counts: dict) -> None:
    doc = {
        "kind": kind,
        "data_version": DATA_VERSION,
        "config": asdict(cfg),
        "counts": counts,
        "clip_frames": CLIP_FRAMES,
    }
    atomic_write(root / "manifest.json", json.dumps(doc, indent=2))


def build_training_set(out: str | Path, cfg: BuildConfig) -> dict:
    """Build (or resume) a training set of ``cfg.scenes`` scenes; returns row counts per split."""
    root = Path(out)
    _claim(root, "training", cfg)
    names = [f"train{cfg.seed}-s{i:05d}" for i in range(cfg.scenes)]
    units = [(cfg, str(root), n, i) for i, n in enumerate(names)]
    _run_units(_train_unit, units, names, root, cfg.workers, "scenes")
    rows = [r for n in names for r in read_jsonl(root / "shards" / f"{n}.jsonl")]
    counts = {}
    for split in ("train", "val"):
        counts[split] = write_jsonl(
            root / f"{split}.jsonl", (r for r in rows if r["split"] == split)
        )
    _write_manifest(root, "training", cfg, counts)
    return counts


def build_qvs_bench(out: str | Path, cfg: BuildConfig) -> int:
    """Build (or resume) QVS-Bench-Sim with ``cfg.questions`` questions on held-out scenes."""
    root = Path(out)
    _claim(root, "qvs_bench", cfg)
    plan = qvs_plan(cfg.questions, cfg.seed)
    slots = [(i, t, k) for i, (t, k) in enumerate(plan)]
    groups = [slots[i : i + cfg.qvs_group] for i in range(0, len(slots), cfg.qvs_group)]
    names = [f"qvs-g{g:04d}" for g in range(len(groups))]
    units = [(cfg, str(root), g, s) for g, s in enumerate(groups)]
    _run_units(_qvs_unit, units, names, root, cfg.workers, "QVS groups")
    rows = [r for n in names for r in read_jsonl(root / "shards" / f"{n}.jsonl")]
    n = write_jsonl(root / "qvs_bench.jsonl", rows)
    _write_manifest(root, "qvs_bench", cfg, {"qvs": n})
    return n


@dataclass
class Dataset:
    """A built dataset folder: rows by split, scenes on demand."""

    root: Path
    manifest: dict
    rows: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path) -> Dataset:
        root = Path(root)
        if not (root / "manifest.json").exists():
            raise DataError(f"{root}: no manifest.json; build the dataset first")
        try:
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{root / 'manifest.json'}: not valid JSON ({err})") from err
        ds = cls(root, manifest)
        for split in ("train", "val", "qvs_bench"):
            path = root / f"{split}.jsonl"
            if path.exists():
                rows = read_jsonl(path)
                for i, row in enumerate(rows, start=1):
                    check_dataset_row(row, path, i)
                ds.rows["qvs" if split == "qvs_bench" else split] = rows
        return ds

    def scene(self, scene_id: str) -> tuple[Scene, dict]:
        """The scene and its stored document (with per-clip visible pixels)."""
        doc = json.loads((self.root / "scenes" / f"{scene_id}.json").read_text())
        return Scene.from_json(doc), doc

    def all_rows(self) -> list[dict]:
        return [r for rows in self.rows.values() for r in rows]

    @property
    def min_pixels(self) -> int:
        """Visible pixels an object needs in a frame to count as seen."""
        return max(1, round(MIN_VISIBLE_FRACTION * self.manifest["config"]["image_size"] ** 2))

    def hidden_objects(self, row: dict) -> tuple[Scene, set[int]]:
        """The row's scene, and the indices of its objects no sampled frame shows."""
        scene, doc = self.scene(row["scene_id"])
        clip_doc = next(c for c in doc["clips"] if c["clip_id"] == row["clip_id"])
        px = np.asarray(clip_doc["visible_pixels"])[row["frame_indices"]]
        return scene, {i for i, m in enumerate(px.max(axis=0)) if m < self.min_pixels}

    def later_views(self, row: dict, scene: Scene | None = None) -> list[dict | None]:
        """Per object of the row's map (its ``visibility`` order), for an object the first sampled
        frame does not show (no pixel) and a later one does: ``frame``, the index among the
        sampled frames of the first that shows it; ``turn``, +1 where the camera turns left
        (counter-clockwise from above) over the clip, -1 right; ``heading``, that frame's camera
        heading from the first camera's, in quarter turns counter-clockwise (0-3, nearest).
        None for an object the first frame shows or no sampled frame shows. What a model must
        know of the camera's motion to place such an object in the first camera's map frame.
        ``scene``: the row's, when the caller has it loaded."""
        scene = scene or self.scene(row["scene_id"])[0]
        poses = scene.clip(row["clip_id"]).poses
        yaws = [poses[i].yaw for i in row["frame_indices"]]
        turn = 1 if poses[-1].yaw >= poses[0].yaw else -1
        out: list[dict | None] = []
        for pixels in row.get("visibility") or []:
            later = [f for f, v in enumerate(pixels) if v > 0]
            if not later or later[0] == 0:
                out.append(None)
                continue
            f = later[0]
            heading = round((yaws[f] - yaws[0]) / 90.0) % 4
            out.append({"frame": f, "turn": turn, "heading": heading})
        return out


def later_objects(ds: Dataset, rows: Sequence[dict]) -> list[tuple[dict, tuple[float, float]]]:
    """(cues, true center in m, map frame) of every object of ``rows`` that only later sampled
    frames show (:meth:`Dataset.later_views`), for :func:`~v2lo_utils.baselines.cue_priors`;
    each cue dict also holds the row's ``num_frames``."""
    out, scenes = [], {}
    for row in rows:
        if row["scene_id"] not in scenes:
            scenes[row["scene_id"]] = ds.scene(row["scene_id"])[0]
        truth = CogMap.from_json(row["map"])
        views = ds.later_views(row, scenes[row["scene_id"]])
        if len(views) != len(truth.objects):  # a row without visibility
            continue
        for obj, view in zip(truth.objects, views, strict=True):
            if view is not None:
                out.append(({**view, "num_frames": row["num_frames"]}, obj.center))
    return out


def visibility_table(
    ds: Dataset, frame_counts: Sequence[int] = FRAME_COUNTS
) -> dict[int, list[float]]:
    """For each frame count: per clip, the fraction of the scene's objects seen in the sampled
    frames (at least the visibility threshold of pixels)."""
    min_px = ds.min_pixels
    table: dict[int, list[float]] = {k: [] for k in frame_counts}
    for path in sorted((ds.root / "scenes").glob("*.json")):
        doc = json.loads(path.read_text())
        for clip in doc["clips"]:
            px = np.asarray(clip["visible_pixels"])
            if px.size == 0 or px.shape[1] == 0:
                continue
            for k in frame_counts:
                seen = px[sample_indices(len(px), k)].max(axis=0) >= min_px
                table[k].append(float(seen.mean()))
    return table


def dataset_summary(ds: Dataset) -> dict:
    """Counts per split, task and frame count; written as the data stage's metrics."""
    from collections import Counter

    out: dict = {"root": str(ds.root)}
    for split, rows in ds.rows.items():
        out[split] = {
            "rows": len(rows),
            "scenes": len({r["scene_id"] for r in rows}),
            "by_task": dict(Counter(r["task"] for r in rows)),
            "by_frames": {
                str(k): v for k, v in sorted(Counter(r["num_frames"] for r in rows).items())
            },
        }
    return out
