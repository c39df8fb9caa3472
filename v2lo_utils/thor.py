"""AI2-THOR adapter: object metadata and agent pose -> the project's cognitive map.

AI2-THOR (Unity) is left-handed: x and z lie on the floor, y is up, and an agent with
``rotation.y`` = theta degrees faces (sin theta, cos theta) in (x, z), its right being
(cos theta, -sin theta). The map frame (spec section 1) puts the agent at the origin, +y along its
facing and +x to its right; footprints come from ``axisAlignedBoundingBox`` center and size.
The agent must face a room axis (theta a multiple of 90 degrees) so footprints stay axis-aligned.

:func:`collect_thor_frames` drives a real AI2-THOR controller; it needs the ``ai2thor`` package and
a display or GPU, and says so when they are missing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

from .catalog import BY_THOR_TYPE
from .cogmap import CogMap, ObjectBox
from .loaders import DataError


def _get(doc: object, path: str, source: str) -> object:
    cur = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise DataError(f"{source}: field '{path}' is missing")
        cur = cur[part]
    return cur


def _num(doc: object, path: str, source: str) -> float:
    value = _get(doc, path, source)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{source}: field '{path}': expected a finite number, got {value!r:.30}")
    return float(value)


def agent_frame(metadata: dict, source: str = "<metadata>", tolerance_deg: float = 1.0):
    """(origin (x, z), forward, right) of the agent, the map frame's axes in AI2-THOR's floor."""
    theta = _num(metadata, "agent.rotation.y", source)
    snapped = round(theta / 90.0) * 90.0
    if abs(theta - snapped) > tolerance_deg:
        raise DataError(
            f"{source}: field 'agent.rotation.y' = {theta}: the agent must face a room axis "
            "(a multiple of 90 degrees) for axis-aligned map boxes"
        )
    a = math.radians(snapped)
    forward = (round(math.sin(a)), round(math.cos(a)))
    right = (round(math.cos(a)), -round(math.sin(a)))
    origin = (
        _num(metadata, "agent.position.x", source),
        _num(metadata, "agent.position.z", source),
    )
    return origin, forward, right


def thor_map(
    metadata: dict,
    source: str = "<metadata>",
    types: Iterable[str] | None = None,
    ndigits: int = 2,
) -> CogMap:
    """The cognitive map (m, map frame of the agent) of the objects whose ``objectType`` is in
    ``types`` (default: the catalog's furniture), named in lower case."""
    if not isinstance(metadata, dict):
        raise DataError(f"{source}: expected an AI2-THOR metadata object")
    keep = set(types) if types is not None else set(BY_THOR_TYPE)
    origin, fwd, right = agent_frame(metadata, source)
    objects = _get(metadata, "objects", source)
    if not isinstance(objects, list):
        raise DataError(f"{source}: field 'objects' must be a list")
    out = []
    for i, obj in enumerate(objects):
        at = f"objects[{i}]"
        kind = _get(obj, "objectType", f"{source}: {at}") if isinstance(obj, dict) else None
        if not isinstance(kind, str):
            raise DataError(f"{source}: field '{at}.objectType' must be a string")
        if kind not in keep:
            continue
        c = [_num(obj, f"axisAlignedBoundingBox.center.{k}", f"{source}: {at}") for k in "xz"]
        s = [_num(obj, f"axisAlignedBoundingBox.size.{k}", f"{source}: {at}") for k in "xz"]
        if s[0] < 0 or s[1] < 0:
            raise DataError(f"{source}: field '{at}.axisAlignedBoundingBox.size' is negative")
        xs, ys = [], []
        for px in (c[0] - s[0] / 2, c[0] + s[0] / 2):
            for pz in (c[1] - s[1] / 2, c[1] + s[1] / 2):
                rel = (px - origin[0], pz - origin[1])
                xs.append(rel[0] * right[0] + rel[1] * right[1])
                ys.append(rel[0] * fwd[0] + rel[1] * fwd[1])
        box = tuple(round(v, ndigits) + 0.0 for v in (min(xs), min(ys), max(xs), max(ys)))
        out.append(ObjectBox(kind.lower(), box))  # type: ignore[arg-type]
    return CogMap(tuple(out))


def load_thor_metadata(path: str | Path) -> dict:
    """An AI2-THOR metadata JSON file (one ``event.metadata``)."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"{p}: no such file") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{p}: not valid JSON ({err.msg}, line {err.lineno})") from err


def thor_map_from_file(path: str | Path, types: Iterable[str] | None = None) -> CogMap:
    return thor_map(load_thor_metadata(path), str(path), types)


def collect_thor_frames(
    scene: str,
    out_dir: str | Path,
    n_frames: int = 16,
    width: int = 224,
    height: int = 224,
    rotate_degrees: float = 10.0,
) -> list[Path]:
    """Render a real AI2-THOR clip: the agent pans right ``rotate_degrees`` per frame, saving
    frame_XX.png and frame_XX.json (its metadata) into ``out_dir``. The first frame's metadata
    gives the map frame (:func:`thor_map_from_file`). Needs ``pip install ai2thor`` and a display
    or GPU; raises RuntimeError saying which is missing."""
    try:
        from ai2thor.controller import Controller
    except ImportError as err:
        raise RuntimeError(
            "collect_thor_frames needs the ai2thor package: pip install ai2thor"
        ) from err
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        controller = Controller(scene=scene, width=width, height=height, fieldOfView=90)
    except Exception as err:  # the Unity build needs a display (X server) or a GPU
        raise RuntimeError(f"AI2-THOR could not start for {scene!r}: {err}") from err
    paths = []
    try:
        event = controller.last_event
        for i in range(n_frames):
            if i:
                event = controller.step(action="RotateRight", degrees=rotate_degrees)
            png = out / f"frame_{i:02d}.png"
            Image.fromarray(event.frame).save(png)
            (out / f"frame_{i:02d}.json").write_text(json.dumps(event.metadata))
            paths.append(png)
    finally:
        controller.stop()
    return paths
