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
    GroundingExample,
    camera_box,
    grounding_examples,
    grounding_prompt,
    token_labels,
    token_shares,
)
from v2lo_utils.renderer import Renderer
from v2lo_utils.simulator import CameraPose, make_scene, sample_indices


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


def grounding_scenes(n: int, seed: int, renderer: Renderer):
    """The scenes :func:`grounding_examples` draws from (the same ids), each with its first clip,
    that clip's first frame rendered densely and its ground-truth map."""
    for s in range(n):
        scene = make_scene(f"grounding{seed}-{s:05d}", seed)
        clip = scene.clips[0]
        yield scene, clip, renderer.render(scene, clip.poses[0], dense=True), scene.gt_map(clip)


def test_grounding_examples_name_visible_unique_objects_with_their_map_boxes():
    examples = grounding_examples(6, seed=9, size=112)
    assert examples and {len(e.names) for e in examples} == {1, 2, 3}
    renderer = Renderer(112, 112)
    for _, _, frame, truth in grounding_scenes(6, 9, renderer):
        mine = [e for e in examples if (e.images[0] == frame.image).all()]
        assert sorted(e.names[0] for e in mine) == sorted(
            o.name
            for o, px in zip(truth.objects, frame.visible_pixels, strict=True)
            if px >= 8 and truth.count(o.name) == 1
        )  # one example per such object, named first
        for e in mine:
            assert len(set(e.names)) == len(e.names) and e.target.startswith("<map>")
            assert all(f"the {n}" in e.prompt for n in e.names)
            for i, obj in enumerate(e.map.objects):
                k = next(j for j, o in enumerate(truth.objects) if o.name == obj.name)
                assert truth.count(obj.name) == 1 and frame.visible_pixels[k] >= 8
                assert (frame.pixel_boxes[k] >= 0).all()  # the renderer has a pixel box for it
                assert np.allclose(obj.bbox, truth.objects[k].bbox, atol=0.051)  # 0.1 m text
                # the lookup's target: each merged token's share of this object's pixels
                shares = np.array(e.tokens[i]).reshape(4, 4)
                ids = frame.ids == k
                for r in range(4):
                    for c in range(4):
                        rows, cols = (
                            slice(r * TOKEN_PX, (r + 1) * TOKEN_PX),
                            slice(c * TOKEN_PX, (c + 1) * TOKEN_PX),
                        )
                        assert shares[r, c] == pytest.approx(ids[rows, cols].mean())
                assert round(shares.sum() * TOKEN_PX**2) == frame.visible_pixels[k]
                named = e.named_tokens(i)
                assert named and all(shares.flat[t] > 0 for t in named)


def test_multi_frame_grounding_reads_the_first_frame_in_its_map_frame():
    examples = grounding_examples(8, seed=5, size=112, max_frames=4)
    renderer = Renderer(112, 112)
    counts = set()
    for scene, clip, first, truth in grounding_scenes(8, 5, renderer):
        mine = [e for e in examples if (e.images[0] == first.image).all()]
        for e in mine:
            k = len(e.images)
            counts.add(k)
            picks = sample_indices(len(clip.poses), k)
            for im, i in zip(e.images[1:], picks[1:], strict=True):  # the dataset's sampling
                assert (im == renderer.render(scene, clip.poses[i]).image).all()
            for i, obj in enumerate(e.map.objects):
                j = next(j for j, o in enumerate(truth.objects) if o.name == obj.name)
                assert first.visible_pixels[j] >= 8  # the first frame shows every named object
                assert np.allclose(obj.bbox, truth.objects[j].bbox, atol=0.051)
                shares = np.array(e.tokens[i])
                assert len(shares) == 16 * k and not shares[16:].any()  # first frame's tokens
                assert np.allclose(shares[:16], token_shares(first.ids, j))
    assert counts == {1, 2, 3, 4}


def test_revealed_grounding_asks_for_objects_only_a_later_frame_shows():
    plain = grounding_examples(8, seed=5, size=112, max_frames=4)
    assert not any(e.revealed for e in plain)
    examples = grounding_examples(8, seed=5, size=112, max_frames=4, revealed=1.0)
    revealed = [e for e in examples if e.revealed]
    assert revealed and len(revealed) < len(examples)
    renderer = Renderer(112, 112)
    for scene, clip, first, truth in grounding_scenes(8, 5, renderer):
        for e in (e for e in revealed if (e.images[0] == first.image).all()):
            (obj,) = e.map.objects  # named alone
            j = next(j for j, o in enumerate(truth.objects) if o.name == obj.name)
            picks = sample_indices(len(clip.poses), len(e.images))
            rest = [renderer.render(scene, clip.poses[i], dense=True) for i in picks[1:]]
            assert first.visible_pixels[j] == 0 and max(f.visible_pixels[j] for f in rest) >= 8
            assert truth.count(obj.name) == 1
            assert np.allclose(obj.bbox, truth.objects[j].bbox, atol=0.051)  # first frame's map
            shares = np.array(e.tokens[0])
            later = np.concatenate([token_shares(f.ids, j) for f in rest])
            assert not shares[:16].any() and np.allclose(shares[16:], later)
            assert e.named_tokens(0) and all(t >= 16 for t in e.named_tokens(0))


def test_instructed_grounding_asks_after_the_datasets_instruction():
    from v2lo_utils.prompting import INSTRUCTION

    plain = grounding_examples(6, seed=3, size=56)
    mixed = grounding_examples(6, seed=3, size=56, instructed=0.5)
    told = [e for e in mixed if e.instructed]
    assert told and len(told) < len(mixed) and not any(e.instructed for e in plain)
    for e in mixed:
        question = grounding_prompt(e.names)
        assert e.prompt == (f"{INSTRUCTION}\n{question}" if e.instructed else question)


def test_grounding_prompts_name_the_objects_in_the_maps_order():
    assert grounding_prompt(["sofa"]) == (
        "Where is the sofa? Its floor box in meters, in <map></map>."
    )
    assert grounding_prompt(["sofa", "bed", "box"]).startswith(
        "Where are the sofa, the bed and the box? Their floor boxes"
    )


def test_named_tokens_fall_back_to_the_best_token():
    image = np.zeros((1, 1, 3), np.uint8)
    e = GroundingExample((image,), None, ((0.0, 0.01, 0.03, 0.0), (0.2, 0.0, 0.5, 0.06)))
    assert e.named_tokens(0) == [2]  # none reaches 5%: the one it covers most
    assert e.named_tokens(1) == [0, 2, 3]
    nowhere = GroundingExample(e.images, e.map, ((0.0, 0.0, 0.0, 0.0),) * 2)
    assert nowhere.named_tokens(0) == []  # on no token: no target rather than token 0


def test_lookup_loss_is_minus_log_the_heads_mass_on_the_named_tokens():
    import torch

    from v2lo_utils.perception import LOOKUP_HEAD, _lookup_loss

    layer, head = LOOKUP_HEAD
    att = torch.zeros(2, head + 1, 5, 6)
    att[0, head, 3] = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0, 0.0])
    att[1, head, 4] = torch.tensor([0.5, 0.0, 0.0, 0.0, 0.25, 0.25])
    attentions = [att] * (abs(layer) + 1)  # enough layers for LOOKUP_HEAD's, from either end
    loss = _lookup_loss(attentions, [[([3], [1, 3], [])], [([4], [0], []), ([4], [4, 5], [])]])
    assert float(loss) == pytest.approx(-(np.log(0.6) + np.log(0.5) * 2) / 3, rel=1e-5)
    # every query of an object counts: here (3, [1, 3]) twice and (3, [0]) once
    loss = _lookup_loss(attentions, [[([3, 3], [1, 3], []), ([3], [0], [])], []])
    assert float(loss) == pytest.approx(-(np.log(0.6) * 2 + np.log(0.1)) / 3, rel=1e-5)
    assert _lookup_loss(attentions, [[], []]) is None


def test_perception_stages_train_their_parts_and_the_preset_reloads(tmp_path):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from v2lo_utils.models import load_model
    from v2lo_utils.perception import train_grounding
    from v2lo_utils.presets import PERCEPTION_FILE, PRESETS, build_random_model

    torch.set_num_threads(1)
    p = replace(PRESETS["tiny"], vision_steps=4, grounding_steps=4, grounding_frames=3)
    plain = build_random_model(PRESETS["tiny"], tmp_path / "plain", "tiny")
    folder = build_random_model(p, tmp_path / "perceived", "tiny-perception")
    report = json.loads((folder / PERCEPTION_FILE).read_text())
    assert report["vision"]["steps"] == 4 and report["grounding"]["steps"] == 4
    assert (
        not report["vision"]["stopped_by_budget"] and not report["grounding"]["stopped_by_budget"]
    )
    after = report["grounding_after"]
    assert after["n"] > 0 and "x0_r" in after and 0 <= after["lookup_attention"] <= 1
    assert after["multi_frame"]["n"] > 0  # clips of 2-3 frames among the held-out examples
    assert report["grounding"]["final_lookup_loss"] is not None
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


def test_a_build_budget_stops_both_perception_stages_and_says_so(tmp_path):
    import torch

    from v2lo_utils.perception import VISION_SHARE
    from v2lo_utils.presets import PERCEPTION_FILE, PRESET_FILE, PRESETS, build_random_model
    from v2lo_utils.report import perception_sentence

    torch.set_num_threads(1)
    p = replace(PRESETS["tiny"], vision_steps=10_000, grounding_steps=10_000)
    folder = build_random_model(p, tmp_path / "budget", "tiny-budget", max_seconds=4.0)
    report = json.loads((folder / PERCEPTION_FILE).read_text())
    vision, grounding = report["vision"], report["grounding"]
    for stage in (vision, grounding):
        assert stage["stopped_by_budget"] and 1 <= stage["steps"] < stage["max_steps"] == 10_000
    # each stops at its share (10,000 steps would take minutes); the slack is for a loaded machine
    assert VISION_SHARE * 4.0 <= vision["seconds"] < VISION_SHARE * 4.0 + 10.0
    assert vision["seconds"] + grounding["seconds"] < 4.0 + 20.0
    assert report["max_seconds"] == 4.0
    assert json.loads((folder / PRESET_FILE).read_text())["max_seconds"] == 4.0
    text = perception_sentence(report)  # the report says where the budget ended each stage
    assert "built under a 4 s training budget" in text
    assert f"vision tower, {vision['steps']} steps of 10000 (stopped by the budget)" in text
    assert f"grounding, {grounding['steps']} steps of 10000 (stopped by the budget)" in text


def test_lookup_queries_at_each_named_objects_entry_token(tmp_path):
    """The lookup's first query position holds the map entry of the object it looks up (its
    name), its queries write the object's first coordinates, its keys are image tokens showing
    that object, and ``xy`` points at the object's x0 and y0."""
    from v2lo_utils.models import load_model
    from v2lo_utils.perception import LOOKUP_COORDS, _lookup, _sft_rows
    from v2lo_utils.presets import COORD_TOKENS, category_tokens, create_preset, entry_tokens
    from v2lo_utils.sft import FrameLoadingCollator

    loaded = load_model(create_preset("tiny", tmp_path / "tiny"))
    tok = loaded.processor.tokenizer
    examples = grounding_examples(4, seed=1, size=56) + grounding_examples(4, 2, 56, max_frames=3)
    assert any(len(e.images) > 1 for e in examples)
    batch = FrameLoadingCollator(loaded.processor)(_sft_rows(examples))
    coord_ids = set(tok.convert_tokens_to_ids(list(COORD_TOKENS)))
    image_id = loaded.model.config.image_token_id
    where = _lookup(batch, examples, image_id, coord_ids)
    entry = dict(
        zip(category_tokens(), tok.convert_tokens_to_ids(list(entry_tokens())), strict=True)
    )
    checked = 0
    for j, (e, row) in enumerate(zip(examples, where, strict=True)):
        ids, labels = batch["input_ids"][j].tolist(), batch["labels"][j].tolist()
        assert len(row) == len(e.names)
        for i, (qs, named, xy) in enumerate(row):
            assert ids[qs[0]] == entry[e.names[i]]
            # the queries write the object's first LOOKUP_COORDS coordinates, in order
            assert len(qs) == LOOKUP_COORDS
            box = [float(v) for v in tok.convert_ids_to_tokens([labels[q + 1] for q in qs])]
            assert box == pytest.approx(e.map.objects[i].bbox[:LOOKUP_COORDS], abs=1e-6)
            assert named and all(ids[p] == image_id for p in named)
            # keys in the first frame only: its 4 tokens (56 px) are the row's first image tokens
            first = [p for p, t in enumerate(ids) if t == image_id][:4]
            assert set(named) <= set(first)
            x0, y0 = (float(v) for v in tok.convert_ids_to_tokens([labels[p] for p in xy]))
            assert (x0, y0) == pytest.approx(e.map.objects[i].bbox[:2], abs=1e-6)
            checked += 1
    assert checked >= len(examples)
