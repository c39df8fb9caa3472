"""The presets' perception stages: labels from the renderer, grounding rows, and the stages run."""

import json
from dataclasses import replace

import numpy as np
import pytest

from v2lo_utils.perception import (
    BOX_SCALE,
    CATEGORY_INDEX,
    N_CAT,
    TOKEN_PX,
    camera_box,
    grounding_examples,
    token_labels,
)
from v2lo_utils.renderer import Renderer
from v2lo_utils.simulator import CameraPose, make_scene


def test_camera_boxes_are_the_map_frames_on_axis_and_rotate_with_the_camera():
    scene = make_scene("p0", 3)
    first = scene.clips[0].poses[0]
    truth = scene.gt_map(scene.clips[0])
    for obj, placed in zip(truth.objects, scene.objects, strict=True):
        assert np.allclose(camera_box(placed.box, first), obj.bbox, atol=0.006)
    box, pose = (1.0, 2.0, 2.0, 3.0), CameraPose(0.0, 0.0, 90.0)  # looking along -x
    x0, y0, x1, y1 = camera_box(box, pose)
    assert np.allclose((x0, y0, x1, y1), (2.0, -2.0, 3.0, -1.0))  # +y is to its right


@pytest.mark.parametrize("frame", [0, 7, 13])
def test_token_labels_hold_each_tokens_objects_boxes_from_the_renderer(frame):
    scene = make_scene("p1", 5)
    pose = scene.clips[0].poses[frame]
    image, labels = token_labels(scene, pose, 112, min_token_px=20)
    dense = Renderer(112, 112).render(scene, pose, dense=True)
    assert (image == dense.image).all() and labels.shape == (16, 5 * N_CAT + 2)
    boxes = [camera_box(o.box, pose) for o in scene.objects]
    g = 112 // TOKEN_PX
    checked = 0
    for t, lab in enumerate(labels):
        r, c = divmod(t, g)
        ids = dense.ids[r * TOKEN_PX : (r + 1) * TOKEN_PX, c * TOKEN_PX : (c + 1) * TOKEN_PX]
        assert np.allclose(lab[-2:], [(2 * r + 1) / g - 1, (2 * c + 1) / g - 1])
        assert lab[:N_CAT].sum() == pytest.approx((ids >= 0).mean(), abs=1e-6)
        counts = np.bincount(ids[ids >= 0], minlength=len(scene.objects))
        for cat in range(N_CAT):
            slot = lab[N_CAT + 4 * cat : N_CAT + 4 * cat + 4]
            mine = [k for k, o in enumerate(scene.objects) if CATEGORY_INDEX[o.name] == cat]
            best = max(mine, key=lambda k: (counts[k], -k), default=None)
            if best is None or counts[best] < 20:
                assert not slot.any()
            else:  # the box of the category's object that covers most of the token
                assert np.allclose(slot * BOX_SCALE, boxes[best], atol=1e-5)
                checked += 1
    assert checked > 0


def test_grounding_examples_name_visible_unique_objects_with_their_map_boxes():
    examples = grounding_examples(6, seed=9, size=112)
    assert examples
    renderer = Renderer(112, 112)
    for s in range(6):
        scene = make_scene(f"grounding9-{s:05d}", 9)
        clip = scene.clips[0]
        frame = renderer.render(scene, clip.poses[0], dense=True)
        truth = scene.gt_map(clip)
        mine = [e for e in examples if (e.image == frame.image).all()]
        for e in mine:
            (obj,) = e.map.objects
            k = next(i for i, o in enumerate(truth.objects) if o.name == e.name)
            assert truth.count(e.name) == 1 and frame.visible_pixels[k] >= 8
            assert (frame.pixel_boxes[k] >= 0).all()  # the renderer has a pixel box for it
            assert np.allclose(obj.bbox, truth.objects[k].bbox, atol=0.051)  # 0.1 m text
            assert e.name in e.prompt and e.target.startswith("<map>")


def test_perception_stages_train_their_parts_and_the_preset_reloads(tmp_path):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from v2lo_utils.models import load_model
    from v2lo_utils.perception import train_grounding
    from v2lo_utils.presets import PERCEPTION_FILE, PRESETS, build_random_model

    torch.set_num_threads(1)
    p = replace(PRESETS["tiny"], vision_steps=4, grounding_steps=4)
    plain = build_random_model(PRESETS["tiny"], tmp_path / "plain", "tiny")
    folder = build_random_model(p, tmp_path / "perceived", "tiny-perception")
    report = json.loads((folder / PERCEPTION_FILE).read_text())
    assert report["vision"]["steps"] == 4 and report["grounding"]["steps"] == 4
    assert report["grounding_after"]["n"] > 0 and "x0_r" in report["grounding_after"]
    a = Qwen2_5_VLForConditionalGeneration.from_pretrained(plain).state_dict()
    b = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if "visual" in k)  # stage 1 moved it
    # stage 2 leaves the vision tower as it was and trains the rest
    loaded = load_model(folder)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    train_grounding(loaded.model, loaded.processor, grounding_examples(3, 1, 56), steps=3)
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "visual" in k)
    assert any(not torch.equal(before[k], after[k]) for k in before if "visual" not in k)
    assert all(p.requires_grad for p in loaded.model.parameters())  # unfrozen again
