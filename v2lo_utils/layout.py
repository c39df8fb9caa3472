"""Rooms and non-overlapping furniture layouts, and the change to the map frame.

Room frame: meters, origin at a room corner, x along the room's width, y along its depth, floor at
z = 0. The map frame (spec section 1) has its origin at a camera on the floor plane, +y along the
camera's forward and +x to its right; a camera looking along a room axis keeps footprints
axis-aligned, which :func:`to_map_frame` requires.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from . import geometry as geo
from .catalog import CATEGORIES, Category
from .cogmap import CogMap, ObjectBox
from .geometry import Box


@dataclass(frozen=True)
class Room:
    width: float  # m, along x
    depth: float  # m, along y
    height: float = 2.7  # m


@dataclass(frozen=True)
class Placed:
    """One piece of furniture: its category and footprint in the room frame (m)."""

    category: Category
    box: Box
    height: float

    @property
    def name(self) -> str:
        return self.category.name


def random_room(rng: random.Random) -> Room:
    """A living-room-sized rectangle: 4-8 m by 4-7 m."""
    return Room(round(rng.uniform(4.0, 8.0), 2), round(rng.uniform(4.0, 7.0), 2))


def _overlaps(a: Box, b: Box, gap: float) -> bool:
    return not (
        a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]
    )


def place_furniture(
    rng: random.Random,
    room: Room,
    n_objects: int,
    gap: float = 0.25,
    margin: float = 0.05,
    tries: int = 60,
    keep_clear: Sequence[Box] = (),
) -> list[Placed]:
    """Up to ``n_objects`` pieces, no two closer than ``gap`` meters, wall pieces against a wall,
    none overlapping a ``keep_clear`` region (room frame, m; e.g. a camera's path).

    Categories respect their ``max_count``; sizes jitter around the catalog's; coordinates are
    rounded to 1 cm so that maps stored as JSON reload exactly.
    """
    placed: list[Placed] = []
    counts: dict[str, int] = {}
    for _ in range(n_objects * 4):
        if len(placed) >= n_objects:
            break
        cat = rng.choice(CATEGORIES)
        if counts.get(cat.name, 0) >= cat.max_count:
            continue
        s = 1 + rng.uniform(-cat.jitter, cat.jitter)
        w, d = cat.size[0] * s, cat.size[1] * s
        for _ in range(tries):
            box = _candidate(rng, room, cat, w, d, margin)
            if (
                box
                and not any(_overlaps(box, p.box, gap) for p in placed)
                and not any(_overlaps(box, k, 0.0) for k in keep_clear)
            ):
                h = round(cat.height * (1 + rng.uniform(-0.1, 0.1)), 2)
                placed.append(Placed(cat, box, h))
                counts[cat.name] = counts.get(cat.name, 0) + 1
                break
    return placed


def _candidate(
    rng: random.Random, room: Room, cat: Category, w: float, d: float, margin: float
) -> Box | None:
    if cat.against_wall:
        wall = rng.randrange(4)
        if wall in (1, 3):  # east/west walls: the piece turns, width runs along y
            w, d = d, w
        if w + 2 * margin > room.width or d + 2 * margin > room.depth:
            return None
        x0 = rng.uniform(margin, room.width - margin - w)
        y0 = rng.uniform(margin, room.depth - margin - d)
        x0, y0 = {
            0: (x0, margin),
            1: (room.width - margin - w, y0),
            2: (x0, room.depth - margin - d),
            3: (margin, y0),
        }[wall]
    else:
        if rng.random() < 0.5:
            w, d = d, w
        if w + 2 * margin > room.width or d + 2 * margin > room.depth:
            return None
        x0 = rng.uniform(margin, room.width - margin - w)
        y0 = rng.uniform(margin, room.depth - margin - d)
    return (round(x0, 2), round(y0, 2), round(x0 + w, 2), round(y0 + d, 2))


def to_map_frame(box: Box, camera: geo.Vec, yaw_deg: float) -> Box:
    """A room-frame footprint in the map frame of a camera at ``camera`` (m, room frame) whose
    forward direction is ``yaw_deg`` counter-clockwise from the room's +y axis.

    The yaw must be a multiple of 90 degrees so that the box stays axis-aligned.
    """
    if round(yaw_deg) % 90 != 0 or abs(yaw_deg - round(yaw_deg)) > 1e-9:
        raise ValueError(f"camera yaw {yaw_deg} is not along a room axis")
    a = math.radians(yaw_deg)
    fwd = (round(-math.sin(a)), round(math.cos(a)))
    right = geo.right_of(fwd)
    xs, ys = [], []
    for px, py in ((box[0], box[1]), (box[2], box[3])):
        rel = (px - camera[0], py - camera[1])
        xs.append(geo.dot(rel, right))
        ys.append(geo.dot(rel, fwd))
    return (min(xs), min(ys), max(xs), max(ys))


def scene_map(placed: list[Placed], camera: geo.Vec, yaw_deg: float, ndigits: int = 2) -> CogMap:
    """The ground-truth cognitive map of a layout seen from a camera pose (m, map frame), rounded
    to ``ndigits`` (1 cm by default: the precision of the stored ground truth)."""
    return CogMap(
        tuple(
            ObjectBox(
                p.name, tuple(round(v, ndigits) + 0.0 for v in to_map_frame(p.box, camera, yaw_deg))
            )  # type: ignore[arg-type]
            for p in placed
        )
    )


def random_scene_map(rng: random.Random, n_objects: int = 10) -> CogMap:
    """A random room and layout seen from a camera at the middle of one wall, looking in."""
    room = random_room(rng)
    placed = place_furniture(rng, room, n_objects)
    wall = rng.randrange(4)
    camera, yaw = {
        0: ((room.width / 2, 0.3), 0.0),
        1: ((room.width - 0.3, room.depth / 2), 90.0),
        2: ((room.width / 2, room.depth - 0.3), 180.0),
        3: ((0.3, room.depth / 2), 270.0),
    }[wall]
    return scene_map(placed, camera, yaw)
