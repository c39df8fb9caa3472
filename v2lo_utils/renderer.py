"""A small numpy ray caster for simulator scenes: perspective frames with occlusion and shading.

Room frame as in :mod:`v2lo_utils.simulator` (m, z up). Every pixel casts one ray from the camera;
the nearest hit among the room's six surfaces and the furniture boxes (height 0 to the piece's
height) wins, so occlusion is exact. Cues a model can learn from: a 0.5 m checkered floor (scale
and depth), four wall tints (orientation), per-category colours with a top colour and one
horizontal band (shape), face-dependent shading and distance fog. Each frame also reports how many
pixels of every object are visible; a dense frame adds each pixel's object and the pixel box each
object spans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .simulator import CameraPose, Scene

FLOOR_TILE = 0.5  # m
FLOOR_COLORS = ((168, 150, 128), (136, 120, 102))
WALL_COLORS = ((205, 198, 184), (184, 200, 206), (214, 204, 170), (196, 186, 206))  # S, E, N, W
CEILING_COLOR = (236, 236, 232)
# Per category: top colour, and a band (from, to as fractions of the height, colour).
SHAPE_CUES: dict[
    str, tuple[tuple[int, int, int] | None, tuple[float, float, tuple[int, int, int]] | None]
] = {
    "bed": ((240, 240, 236), (0.0, 0.35, (92, 60, 40))),
    "sofa": (None, (0.0, 0.45, (50, 80, 130))),
    "armchair": (None, (0.55, 1.0, (110, 60, 120))),
    "chair": (None, (0.5, 1.0, (150, 105, 35))),
    "diningtable": ((170, 120, 75), (0.0, 0.85, (90, 60, 35))),
    "desk": ((135, 100, 65), (0.0, 0.8, (70, 50, 30))),
    "fridge": (None, (0.62, 0.66, (120, 120, 130))),
    "television": (None, (0.0, 0.3, (90, 90, 95))),
    "dresser": (None, (0.45, 0.5, (90, 65, 40))),
    "dogbed": ((190, 215, 160), None),
    "houseplant": ((30, 120, 40), (0.0, 0.35, (170, 85, 50))),
    "floorlamp": ((255, 235, 150), (0.0, 0.75, (60, 60, 60))),
    "box": ((215, 185, 135), (0.45, 0.55, (150, 120, 80))),
    "garbagecan": ((60, 60, 60), None),
    "sidetable": ((160, 125, 90), (0.0, 0.85, (95, 70, 45))),
    "shelf": (None, (0.48, 0.52, (60, 40, 20))),
}
# Brightness per hit face: axis 0 (x faces), 1 (y faces), 2 (floor / top / ceiling).
FACE_SHADE = np.array([0.72, 0.88, 1.0], dtype=np.float32)
FOG = 0.045  # per meter of depth


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # H x W x 3 uint8
    visible_pixels: np.ndarray  # per object of the scene, in scene order
    ids: np.ndarray | None = None  # dense only: H x W object index per pixel, -1 for the room
    pixel_boxes: np.ndarray | None = None  # dense only: objects x 4, the visible pixels'
    # (col0, row0, col1, row1), ends exclusive, from the top-left corner; -1 where none shows


def pixel_boxes(ids: np.ndarray, n_objects: int) -> np.ndarray:
    """Per object id 0..n-1 of an id image (-1 = no object): the bounding box of its pixels as
    (col0, row0, col1, row1), ends exclusive; rows of -1 for ids that do not occur."""
    out = np.full((n_objects, 4), -1, dtype=np.int32)
    rows, cols = np.nonzero(ids >= 0)
    if rows.size == 0:
        return out
    k = ids[rows, cols].astype(np.int64)
    present = np.bincount(k, minlength=n_objects) > 0
    for box, fn, vals, pad in (
        (0, np.minimum, cols, 0),
        (1, np.minimum, rows, 0),
        (2, np.maximum, cols, 1),
        (3, np.maximum, rows, 1),
    ):
        init = np.iinfo(np.int64).max if fn is np.minimum else -1
        acc = np.full(n_objects, init, dtype=np.int64)
        fn.at(acc, k, vals)
        out[present, box] = acc[present] + pad
    return out


class Renderer:
    """Renders scenes at a fixed size and horizontal field of view (degrees)."""

    def __init__(self, width: int = 224, height: int = 224, hfov_deg: float = 90.0) -> None:
        if width < 8 or height < 8:
            raise ValueError(f"frames must be at least 8 x 8 pixels, got {width} x {height}")
        self.width, self.height = width, height
        self.focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        u = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / self.focal
        v = (height / 2 - np.arange(height, dtype=np.float32) - 0.5) / self.focal
        self._xc, self._yc = np.meshgrid(u, v)

    def _basis(self, pose: CameraPose) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, p = math.radians(pose.yaw), math.radians(pose.pitch)
        fh = np.array([-math.sin(a), math.cos(a), 0.0])
        right = np.array([math.cos(a), math.sin(a), 0.0])
        fwd = math.cos(p) * fh + np.array([0.0, 0.0, math.sin(p)])
        up = -math.sin(p) * fh + np.array([0.0, 0.0, math.cos(p)])
        return right, up, fwd

    def _roi(self, pose, right, up, fwd, box, height) -> tuple[slice, slice] | None:
        """Pixel rectangle that holds the box's projection; None when it is behind the camera."""
        xs = np.array([box[0], box[2]])
        ys = np.array([box[1], box[3]])
        zs = np.array([0.0, height])
        corners = np.stack(np.meshgrid(xs, ys, zs), -1).reshape(-1, 3) - (
            pose.x,
            pose.y,
            pose.height,
        )
        depth = corners @ fwd
        if (depth <= 0.05).all():
            return None
        if (depth <= 0.05).any():
            return slice(0, self.height), slice(0, self.width)
        u = self.width / 2 + self.focal * (corners @ right) / depth
        v = self.height / 2 - self.focal * (corners @ up) / depth
        c0, c1 = max(0, math.floor(u.min())), min(self.width, math.ceil(u.max()) + 1)
        r0, r1 = max(0, math.floor(v.min())), min(self.height, math.ceil(v.max()) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def render(self, scene: Scene, pose: CameraPose, dense: bool = False) -> Frame:
        """One frame of ``scene`` from ``pose``; ``dense`` adds the per-pixel object ids and each
        object's pixel box (the labels of the presets' perception stage)."""
        right, up, fwd = self._basis(pose)
        xc, yc = self._xc, self._yc
        d = [
            xc * np.float32(right[i]) + yc * np.float32(up[i]) + np.float32(fwd[i])
            for i in range(3)
        ]
        o = (pose.x, pose.y, pose.height)
        inv = [1.0 / np.where(np.abs(di) < 1e-9, np.float32(1e-9), di) for di in d]
        room = scene.room
        bounds = ((0.0, room.width), (0.0, room.depth), (0.0, room.height))
        # room surfaces: exit distance along each axis
        ts = [
            np.where(d[i] > 0, (bounds[i][1] - o[i]) * inv[i], (bounds[i][0] - o[i]) * inv[i])
            for i in range(3)
        ]
        axis = np.where(ts[0] < ts[1], 0, 1).astype(np.int8)
        t = np.minimum(ts[0], ts[1])
        zhit = ts[2] < t
        axis[zhit] = 2
        t = np.where(zhit, ts[2], t)
        # materials: 0/1 floor tiles, 2..5 walls S E N W, 6 ceiling, 7 + 3k (+1 top, +2 band) objects
        px = o[0] + t * d[0]
        py = o[1] + t * d[1]
        tile = ((np.floor(px / FLOOR_TILE) + np.floor(py / FLOOR_TILE)) % 2).astype(np.int16)
        mat = np.where(d[2] > 0, 6, tile).astype(np.int16)
        wall_y = np.where(d[1] > 0, 4, 2).astype(np.int16)
        wall_x = np.where(d[0] > 0, 3, 5).astype(np.int16)
        mat = np.where(axis == 1, wall_y, np.where(axis == 0, wall_x, mat))
        ids = np.full(t.shape, -1, dtype=np.int16)
        for k, obj in enumerate(scene.objects):
            roi = self._roi(pose, right, up, fwd, obj.box, obj.height)
            if roi is None:
                continue
            lo = (obj.box[0], obj.box[1], 0.0)
            hi = (obj.box[2], obj.box[3], obj.height)
            near, far, near_axis = None, None, None
            for i in range(3):
                iv = inv[i][roi]
                t1 = (lo[i] - o[i]) * iv
                t2 = (hi[i] - o[i]) * iv
                tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
                if near is None:
                    near, far, near_axis = tmin, tmax, np.zeros(tmin.shape, np.int8)
                else:
                    bigger = tmin > near
                    near = np.where(bigger, tmin, near)
                    near_axis[bigger] = i
                    far = np.minimum(far, tmax)
            troi = t[roi]
            hit = (near <= far) & (near > 0) & (near < troi)
            if not hit.any():
                continue
            troi[hit] = near[hit]
            axis[roi][hit] = near_axis[hit]
            ids[roi][hit] = k
            zh = o[2] + near * d[2][roi]
            m = np.full(near.shape, 7 + 3 * k, np.int16)
            top, band = SHAPE_CUES.get(obj.name, (None, None))
            if band is not None:
                inband = (zh >= band[0] * obj.height) & (zh <= band[1] * obj.height)
                m[inband] = 7 + 3 * k + 2
            if top is not None:
                m[near_axis == 2] = 7 + 3 * k + 1
            mat[roi][hit] = m[hit]
        palette = self._palette(scene)
        shade = FACE_SHADE[axis] / (1.0 + FOG * t)
        image = (palette[mat] * shade[..., None]).clip(0, 255).astype(np.uint8)
        counts = np.bincount(ids[ids >= 0].ravel(), minlength=len(scene.objects))
        if not dense:
            return Frame(image, counts)
        return Frame(image, counts, ids, pixel_boxes(ids, len(scene.objects)))

    @staticmethod
    def _palette(scene: Scene) -> np.ndarray:
        colors = [*FLOOR_COLORS, *WALL_COLORS, CEILING_COLOR]
        for obj in scene.objects:
            top, band = SHAPE_CUES.get(obj.name, (None, None))
            base = obj.category.color
            colors += [base, top or base, band[2] if band else base]
        return np.asarray(colors, dtype=np.float32)
