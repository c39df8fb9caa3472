"""Geometry of spec section 2, on hand-computed cases."""

import math

import pytest

from v2lo_utils import geometry as geo


def test_centroid_and_dimensions():
    box = (-10.2, 0.3, -9.4, 1.1)
    assert geo.centroid(box) == pytest.approx((-9.8, 0.7))
    assert geo.width(box) == pytest.approx(0.8)
    assert geo.length(geo.translate(box, 0, 1)) == pytest.approx(0.8)
    assert geo.max_dimension((0, 0, 2.0, 0.9)) == pytest.approx(2.0)
    assert geo.max_dimension((0, 0, 0.5, 1.5)) == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 1, 1), (2, 0, 3, 1), 1.0),  # side by side along x
        ((0, 0, 1, 1), (0, 3, 1, 4), 2.0),  # along y
        ((0, 0, 1, 1), (4, 5, 5, 6), 5.0),  # diagonal: corners 3-4-5
        ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),  # touching
        ((0, 0, 2, 2), (1, 1, 3, 3), 0.0),  # overlapping
        ((0, 0, 4, 4), (1, 1, 2, 2), 0.0),  # contained
    ],
)
def test_closest_distance(a, b, expected):
    assert geo.closest_distance(a, b) == pytest.approx(expected)
    assert geo.closest_distance(b, a) == pytest.approx(expected)


def test_iou():
    assert geo.iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert geo.iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert geo.iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert geo.iou((1, 1, 1, 1), (1, 1, 1, 1)) == 1.0
    assert geo.iou((1, 1, 1, 1), (2, 2, 2, 2)) == 0.0


@pytest.mark.parametrize(
    ("v", "expected"),
    [
        ((1, 1), "Right-Front"),
        ((-1, 1), "Left-Front"),
        ((-1, -1), "Left-Back"),
        ((1, -1), "Right-Back"),
    ],
)
def test_quadrant_camera_frame(v, expected):
    assert geo.quadrant(v, (0.0, 1.0), (1.0, 0.0)) == expected


def test_frames_are_consistent():
    f = (0.0, 1.0)
    assert geo.right_of(f) == (1.0, -0.0)
    assert geo.forward_of((1.0, 0.0)) == (-0.0, 1.0)
    # a rotated frame: facing +x, the right is -y
    f = (1.0, 0.0)
    assert geo.quadrant((1, -1), f, geo.right_of(f)) == "Right-Front"
    assert geo.quadrant((-1, 1), f, geo.right_of(f)) == "Left-Back"
    with pytest.raises(ValueError):
        geo.unit((0.0, 0.0))


def test_boundary_margin_and_perturbation():
    assert geo.boundary_margin_deg((1, 1), (0, 1)) == pytest.approx(45.0)
    assert geo.boundary_margin_deg((1, 0.0), (0, 1)) == pytest.approx(0.0, abs=1e-9)
    assert geo.boundary_margin_deg(
        (math.cos(math.radians(10)), math.sin(math.radians(10))), (0, 1)
    ) == (pytest.approx(10.0))
    assert geo.perturbation_deg(2.0, 1.0) == pytest.approx(30.0)
    assert geo.perturbation_deg(0.1, 0.2) == 90.0


def test_grid_round_trip():
    extent = (-5.0, 0.0, 5.0, 10.0)
    assert geo.grid_cell((-5.0, 0.0), extent, 10) == (0, 0)
    assert geo.grid_cell((5.0, 10.0), extent, 10) == (
        9,
        9,
    )  # the far border belongs to the last cell
    assert geo.grid_cell((0.5, 3.2), extent, 10) == (5, 3)
    assert geo.grid_cell((99.0, -3.0), extent, 10) == (9, 0)  # clamped
    assert geo.grid_cell_center((5, 3), extent, 10) == pytest.approx((0.5, 3.5))
    for p in [(-4.2, 0.1), (3.3, 9.9), (0.0, 5.0)]:
        c = geo.grid_cell_center(geo.grid_cell(p, extent, 20), extent, 20)
        assert abs(c[0] - p[0]) <= 0.25 + 1e-12 and abs(c[1] - p[1]) <= 0.25 + 1e-12
    with pytest.raises(ValueError):
        geo.grid_cell((0, 0), extent, 0)
