"""Procedural indoor scenes: a room, furniture, and camera clips at eye height.

Room frame: meters, origin at a room corner, x along the width, y along the depth, z up. A clip's
first camera looks along a room axis (spec section 1), so its map frame keeps every footprint
axis-aligned; later cameras walk a short way into the room and pan, revealing more of it.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from . import geometry as geo
from .catalog import BY_NAME
from .cogmap import CogMap
from .geometry import Box
from .layout import Placed, Room, place_furniture, scene_map, to_map_frame

EYE_HEIGHT = 1.5  # m
PITCH_DEG = -20.0  # cameras look slightly down
WALL_OFFSET = 0.7  # m: the least distance from its wall a clip starts at
START_DEPTH = 0.45  # a clip starts at most this fraction of the room's span from its wall
WALK_MAX = 1.0  # m walked forward over a clip
SWEEP_DEG = (150.0, 300.0)  # the camera pans this far over a clip, left or right


@dataclass(frozen=True)
class CameraPose:
    """A camera in the room frame: position (m), yaw (degrees counter-clockwise from the room's +y
    axis), height (m) and pitch (degrees, negative looks down)."""

    x: float
    y: float
    yaw: float
    height: float = EYE_HEIGHT
    pitch: float = PITCH_DEG

    @property
    def forward(self) -> geo.Vec:
        a = math.radians(self.yaw)
        return (-math.sin(a), math.cos(a))


@dataclass(frozen=True)
class Clip:
    clip_id: str
    poses: tuple[CameraPose, ...]


@dataclass(frozen=True)
class Scene:
    scene_id: str
    room: Room
    objects: tuple[Placed, ...]
    clips: tuple[Clip, ...]

    def clip(self, clip_id: str) -> Clip:
        for c in self.clips:
            if c.clip_id == clip_id:
                return c
        raise KeyError(f"scene {self.scene_id} has no clip {clip_id!r}")

    def gt_map(self, clip: Clip) -> CogMap:
        """Every object in the map frame of the clip's first camera (m, 1 cm precision)."""
        first = clip.poses[0]
        return scene_map(list(self.objects), (first.x, first.y), first.yaw)

    def map_extent(self, clip: Clip) -> Box:
        """The room's floor in the clip's map frame (m): the extent of its grid maps."""
        first = clip.poses[0]
        box = to_map_frame(
            (0.0, 0.0, self.room.width, self.room.depth), (first.x, first.y), first.yaw
        )
        return tuple(round(v, 2) + 0.0 for v in box)  # type: ignore[return-value]

    def cameras_in_map(
        self, clip: Clip, indices: list[int] | None = None
    ) -> list[tuple[geo.Vec, geo.Vec]]:
        """(position, forward direction) of the clip's cameras in its map frame (m)."""
        first = clip.poses[0]
        fwd0 = first.forward
        right0 = geo.right_of(fwd0)
        out = []
        for i in indices if indices is not None else range(len(clip.poses)):
            p = clip.poses[i]
            rel = (p.x - first.x, p.y - first.y)
            pos = (geo.dot(rel, right0), geo.dot(rel, fwd0))
            f = p.forward
            out.append((pos, (geo.dot(f, right0), geo.dot(f, fwd0))))
        return out

    def to_json(self) -> dict:
        return {
            "scene_id": self.scene_id,
            "room": asdict(self.room),
            "objects": [
                {"name": p.name, "box": list(p.box), "height": p.height} for p in self.objects
            ],
            "clips": [
                {"clip_id": c.clip_id, "poses": [asdict(p) for p in c.poses]} for c in self.clips
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> Scene:
        return cls(
            scene_id=data["scene_id"],
            room=Room(**data["room"]),
            objects=tuple(
                Placed(BY_NAME[o["name"]], tuple(o["box"]), o["height"]) for o in data["objects"]
            ),
            clips=tuple(
                Clip(c["clip_id"], tuple(CameraPose(**p) for p in c["poses"]))
                for c in data["clips"]
            ),
        )


def _clip_path(rng: random.Random, room: Room, clip_id: str, n_frames: int) -> tuple[Clip, Box]:
    """A clip that starts at a wall looking into the room, walks forward and pans; and the floor
    region its camera sweeps (to keep free of furniture)."""
    wall = rng.randrange(4)
    yaw0 = 90.0 * wall  # wall 0 = south (y = 0) looking +y, 1 = east, 2 = north, 3 = west
    along = rng.uniform(0.3, 0.7)
    span = room.depth if wall in (0, 2) else room.width
    off = rng.uniform(WALL_OFFSET, max(WALL_OFFSET, START_DEPTH * span))
    start = {
        0: (room.width * along, off),
        1: (room.width - off, room.depth * along),
        2: (room.width * along, room.depth - off),
        3: (off, room.depth * along),
    }[wall]
    fwd = (-math.sin(math.radians(yaw0)), math.cos(math.radians(yaw0)))
    walk = rng.uniform(0.2, max(0.3, min(WALK_MAX, span - off - 1.0)))
    sweep = rng.uniform(*SWEEP_DEG) * rng.choice((-1, 1))
    poses = []
    for i in range(n_frames):
        s = i / max(1, n_frames - 1)
        x = start[0] + fwd[0] * walk * s
        y = start[1] + fwd[1] * walk * s
        poses.append(CameraPose(round(x, 3), round(y, 3), round(yaw0 + sweep * s, 3)))
    end = (start[0] + fwd[0] * walk, start[1] + fwd[1] * walk)
    clear = 0.45
    region = (
        min(start[0], end[0]) - clear,
        min(start[1], end[1]) - clear,
        max(start[0], end[0]) + clear,
        max(start[1], end[1]) + clear,
    )
    return Clip(clip_id, tuple(poses)), region


def make_scene(
    scene_id: str,
    seed: int,
    n_objects: tuple[int, int] = (8, 14),
    n_clips: int = 1,
    n_frames: int = 16,
) -> Scene:
    """A reproducible scene: the same (scene_id, seed) always gives the same room, furniture and
    clips."""
    rng = random.Random(f"v2lo-scene:{seed}:{scene_id}")
    room = Room(round(rng.uniform(4.5, 8.0), 2), round(rng.uniform(4.5, 7.5), 2))
    clips, clear = [], []
    for k in range(n_clips):
        clip, region = _clip_path(rng, room, f"c{k}", n_frames)
        clips.append(clip)
        clear.append(region)
    placed = place_furniture(rng, room, rng.randint(*n_objects), keep_clear=clear)
    return Scene(scene_id, room, tuple(placed), tuple(clips))


def sample_indices(n_frames: int, k: int) -> list[int]:
    """k frame indices spread uniformly over a clip of n_frames, the first frame always included."""
    if not 1 <= k <= n_frames:
        raise ValueError(f"cannot sample {k} of {n_frames} frames")
    if k == 1:
        return [0]
    return [round(i * (n_frames - 1) / (k - 1)) for i in range(k)]
