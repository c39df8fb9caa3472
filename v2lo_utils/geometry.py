"""Floor-plane geometry in the map frame (spec section 1).

All lengths are meters. The map frame is the bird's-eye view of the floor: origin at the camera of
the first sampled frame, +x to that camera's right, +y along its forward direction. A box is the
axis-aligned footprint ``(x_min, y_min, x_max, y_max)``; a point or vector is ``(x, y)``.
Everything here is a pure function of tuples of floats.
"""

from __future__ import annotations

import math

Box = tuple[float, float, float, float]
Vec = tuple[float, float]

FRONT, BACK, LEFT, RIGHT = "Front", "Back", "Left", "Right"
QUADRANTS = ("Left-Front", "Right-Front", "Left-Back", "Right-Back")


def centroid(box: Box) -> Vec:
    """Center of the footprint (m)."""
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def width(box: Box) -> float:
    """Extent along x, the camera's right (m)."""
    return box[2] - box[0]


def length(box: Box) -> float:
    """Extent along y, the camera's forward (m)."""
    return box[3] - box[1]


def max_dimension(box: Box) -> float:
    """The larger of width and length (m): the object_size answer."""
    return max(width(box), length(box))


def area(box: Box) -> float:
    """Footprint area (m^2); zero for degenerate boxes."""
    return max(0.0, width(box)) * max(0.0, length(box))


def sub(a: Vec, b: Vec) -> Vec:
    """a - b."""
    return (a[0] - b[0], a[1] - b[1])


def dot(a: Vec, b: Vec) -> float:
    return a[0] * b[0] + a[1] * b[1]


def norm(v: Vec) -> float:
    return math.hypot(v[0], v[1])


def unit(v: Vec) -> Vec:
    """v / |v|; raises ValueError for the zero vector (no direction to define a frame)."""
    n = norm(v)
    if n == 0.0:
        raise ValueError("zero vector has no direction")
    return (v[0] / n, v[1] / n)


def right_of(forward: Vec) -> Vec:
    """The right-hand direction for a forward direction in the map frame: r = (f_y, -f_x)."""
    return (forward[1], -forward[0])


def forward_of(right: Vec) -> Vec:
    """The forward direction for a right-hand direction: f = (-r_y, r_x)."""
    return (-right[1], right[0])


def center_distance(a: Box, b: Box) -> float:
    """Distance between the two centroids (m)."""
    return norm(sub(centroid(a), centroid(b)))


def closest_distance(a: Box, b: Box) -> float:
    """Distance between the closest points of two footprints (m); 0 when they touch or overlap."""
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    return math.hypot(dx, dy)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two footprints; two identical degenerate boxes give 1."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    union = area(a) + area(b) - inter
    if union <= 0.0:
        return 1.0 if tuple(a) == tuple(b) else 0.0
    return inter / union


def quadrant(v: Vec, forward: Vec, right: Vec) -> str:
    """Quadrant label of v in the local frame (forward, right): e.g. 'Left-Front'.

    Front when v.f > 0, right when v.r > 0 (spec section 2); zero components count as Back / Left.
    """
    side = RIGHT if dot(v, right) > 0 else LEFT
    depth = FRONT if dot(v, forward) > 0 else BACK
    return f"{side}-{depth}"


def boundary_margin_deg(v: Vec, forward: Vec) -> float:
    """Angle (degrees) between v and the nearest quadrant boundary of the frame given by ``forward``.

    The boundaries are the forward and right axes; 45 is the most a vector can have, 0 lies on an axis.
    """
    if norm(v) == 0.0 or norm(forward) == 0.0:
        return 0.0
    ang = math.degrees(math.atan2(v[1], v[0]) - math.atan2(forward[1], forward[0])) % 90.0
    return min(ang, 90.0 - ang)


def perturbation_deg(vector_length: float, max_shift: float) -> float:
    """Largest rotation (degrees) of a vector of the given length when its end points move by
    ``max_shift`` meters in total; 90 when the shift can reach the vector's length."""
    if vector_length <= max_shift:
        return 90.0
    return math.degrees(math.asin(max_shift / vector_length))


def translate(box: Box, dx: float, dy: float) -> Box:
    """The box moved by (dx, dy) meters."""
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def union_extent(boxes: list[Box]) -> Box:
    """The smallest box that holds all boxes (m); raises ValueError when there are none."""
    if not boxes:
        raise ValueError("no boxes to take the extent of")
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def grid_cell(point: Vec, extent: Box, n: int) -> tuple[int, int]:
    """The (column, row) cell of an n x n grid over ``extent`` that holds ``point``.

    Column 0 is the smallest x, row 0 the smallest y; points outside the extent are clamped to the
    border cells. A zero-size extent axis maps everything to cell 0 on that axis.
    """
    if n < 1:
        raise ValueError(f"grid size must be at least 1, got {n}")

    def index(value: float, lo: float, hi: float) -> int:
        if hi <= lo:
            return 0
        return min(n - 1, max(0, math.floor((value - lo) / (hi - lo) * n)))

    return index(point[0], extent[0], extent[2]), index(point[1], extent[1], extent[3])


def grid_cell_center(cell: tuple[int, int], extent: Box, n: int) -> Vec:
    """The center (m, map frame) of a grid cell; the inverse of :func:`grid_cell` up to one cell."""
    cw = (extent[2] - extent[0]) / n
    ch = (extent[3] - extent[1]) / n
    return (extent[0] + (cell[0] + 0.5) * cw, extent[1] + (cell[1] + 0.5) * ch)


def closest_points(a: Box, b: Box) -> tuple[Vec, Vec]:
    """The closest points of two boxes (m): on each axis the facing edges, or the middle of the
    overlap; their distance is :func:`closest_distance`."""

    def axis(lo1: float, hi1: float, lo2: float, hi2: float) -> tuple[float, float]:
        if hi1 < lo2:
            return hi1, lo2
        if hi2 < lo1:
            return lo1, hi2
        m = (max(lo1, lo2) + min(hi1, hi2)) / 2
        return m, m

    x1, x2 = axis(a[0], a[2], b[0], b[2])
    y1, y2 = axis(a[1], a[3], b[1], b[3])
    return (x1, y1), (x2, y2)
