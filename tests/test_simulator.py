"""Simulator scenes and the renderer: reproducible, non-overlapping, exact occlusion."""

import math

import numpy as np
import pytest

from v2lo_utils import geometry as geo
from v2lo_utils.catalog import BY_NAME
from v2lo_utils.layout import Placed, Room, to_map_frame
from v2lo_utils.renderer import Renderer
from v2lo_utils.simulator import CameraPose, Clip, Scene, make_scene, sample_indices


def test_scenes_are_reproducible_and_distinct():
    a, b = make_scene("s1", 0), make_scene("s1", 0)
    assert a == b
    assert make_scene("s2", 0) != a and make_scene("s1", 1) != a
    assert Scene.from_json(a.to_json()) == a


@pytest.mark.parametrize("seed", range(12))
def test_layout_rules(seed):
    s = make_scene(f"s{seed}", seed, n_clips=2)
    boxes = [o.box for o in s.objects]
    assert len(boxes) >= 6
    for i, a in enumerate(boxes):
        assert 0 <= a[0] < a[2] <= s.room.width and 0 <= a[1] < a[3] <= s.room.depth
        for b in boxes[i + 1 :]:
            assert geo.closest_distance(a, b) >= 0.25 - 1e-6  # the placement gap
    counts = {}
    for o in s.objects:
        counts[o.name] = counts.get(o.name, 0) + 1
        assert 0.2 <= o.height <= 2.1
    assert all(counts[n] <= BY_NAME[n].max_count for n in counts)
    for clip in s.clips:
        first = clip.poses[0]
        assert first.yaw % 90 == 0  # spec: the first camera looks along a room axis
        for p in clip.poses:
            assert 0 < p.x < s.room.width and 0 < p.y < s.room.depth
            assert all(not (b[0] <= p.x <= b[2] and b[1] <= p.y <= b[3]) for b in boxes)
        gt = s.gt_map(clip)
        assert len(gt) == len(s.objects)
        for o, placed in zip(gt.objects, s.objects, strict=True):
            w, d = geo.width(placed.box), geo.length(placed.box)
            assert sorted([geo.width(o.bbox), geo.length(o.bbox)]) == pytest.approx(
                sorted([w, d]), abs=0.011
            )


def test_map_frame_convention():
    # camera at (2, 1) facing +x of the room (yaw 270): room +x is forward, room -y is right
    assert to_map_frame((3.0, 0.0, 4.0, 0.5), (2.0, 1.0), 270.0) == pytest.approx(
        (0.5, 1.0, 1.0, 2.0)
    )
    # facing +y (yaw 0): map = room shifted
    assert to_map_frame((3.0, 2.0, 4.0, 2.5), (2.0, 1.0), 0.0) == pytest.approx(
        (1.0, 1.0, 2.0, 1.5)
    )
    with pytest.raises(ValueError, match="room axis"):
        to_map_frame((0, 0, 1, 1), (0, 0), 45.0)


def test_sample_indices():
    assert sample_indices(16, 1) == [0]
    assert sample_indices(16, 4) == [0, 5, 10, 15]
    assert sample_indices(16, 16) == list(range(16))
    for k in (8, 12):
        idx = sample_indices(16, k)
        assert len(set(idx)) == k and idx[0] == 0 and idx[-1] == 15
    with pytest.raises(ValueError):
        sample_indices(16, 17)


def corridor(objects):
    room = Room(4.0, 10.0, 2.7)
    pose = CameraPose(2.0, 0.5, 0.0, pitch=0.0)
    return Scene("t", room, tuple(objects), (Clip("c0", (pose,)),)), pose


def test_renderer_occlusion_and_visibility():
    cat = BY_NAME["box"]
    near = Placed(cat, (1.7, 3.0, 2.3, 3.5), 2.0)  # a tall box straight ahead
    far = Placed(cat, (1.8, 6.0, 2.2, 6.4), 0.5)  # a small one hidden behind it
    side = Placed(cat, (3.0, 8.0, 3.5, 8.5), 0.5)  # off to the right, in view
    scene, pose = corridor([near, far, side])
    frame = Renderer(96, 96).render(scene, pose)
    assert frame.image.shape == (96, 96, 3) and frame.image.dtype == np.uint8
    px = frame.visible_pixels
    assert px[0] > 0 and px[1] == 0 and px[2] > 0
    assert px.sum() <= 96 * 96
    # without the occluder the far box shows, centered horizontally
    scene2, _ = corridor([far])
    f2 = Renderer(96, 96).render(scene2, pose)
    assert f2.visible_pixels[0] > 0
    assert f2.image.tobytes() == Renderer(96, 96).render(scene2, pose).image.tobytes()


def test_renderer_projection_matches_pinhole():
    # a thin pole 3 m ahead and 1 m right appears at u = W/2 + f * 1/3
    cat = BY_NAME["floorlamp"]
    pole = Placed(cat, (2.95, 3.45, 3.05, 3.55), 2.6)
    scene, pose = corridor([pole])
    r = Renderer(120, 90, hfov_deg=90.0)
    frame = r.render(scene, pose)
    cols = np.where((frame.image != r.render(corridor([])[0], pose).image).any(axis=(0, 2)))[0]
    expected = 60 + r.focal * (1.0 / 3.0)
    assert abs(cols.mean() - expected) < 2.0
    with pytest.raises(ValueError):
        Renderer(4, 4)


def test_cameras_in_map_start_at_origin():
    s = make_scene("s3", 0)
    clip = s.clips[0]
    cams = s.cameras_in_map(clip)
    assert cams[0][0] == pytest.approx((0.0, 0.0)) and cams[0][1] == pytest.approx((0.0, 1.0))
    assert all(math.isclose(geo.norm(f), 1.0) for _, f in cams)


def test_renderer_pixel_boxes_span_each_objects_visible_pixels():
    cat = BY_NAME["box"]
    near = Placed(cat, (1.7, 3.0, 2.3, 3.5), 2.0)
    far = Placed(cat, (1.8, 6.0, 2.2, 6.4), 0.5)  # hidden behind `near`
    side = Placed(cat, (3.0, 8.0, 3.5, 8.5), 0.5)
    scene, pose = corridor([near, far, side])
    frame = Renderer(96, 96).render(scene, pose, dense=True)
    boxes = frame.pixel_boxes
    assert boxes.shape == (3, 4) and (boxes[1] == -1).all()  # no pixel: no box
    empty = Renderer(96, 96).render(corridor([])[0], pose).image
    for k in (0, 2):
        alone = Renderer(96, 96).render(corridor([[near, far, side][k]])[0], pose).image
        rows, cols = np.nonzero((alone != empty).any(axis=2))
        c0, r0, c1, r1 = boxes[k]
        # the box holds every pixel of the object (alone it shows at least as much)...
        assert 0 <= c0 < c1 <= 96 and 0 <= r0 < r1 <= 96
        if k == 2:  # ...and, unoccluded, exactly the pixels it changes
            assert (c0, r0, c1, r1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert boxes[2][0] > 48  # right of the centre line
