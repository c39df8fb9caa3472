"""Perception for the presets: what Qwen2.5-VL's pretraining gives the 7B and a random preset lacks.

Two stages, run once when a preset is built (``presets.create_preset``) and cached with it:

1. Vision: the vision tower learns, per merged token (28 x 28 px), which categories it shows and
   where each of those objects lies on the floor. A throwaway linear head regresses the token's
   labels (:func:`token_labels`) from the tower's output; the renderer knows every pixel's object.
2. Grounding: the whole model learns to answer "Where is the <name>?" (or "Where are the <a>,
   the <b> and the <c>?") with the objects' floor boxes in the map format, from clips of 1 to
   ``Preset.grounding_frames`` frames of fresh scenes (:func:`grounding_examples`; the boxes in
   the first frame's map frame, a share of the questions after the dataset's instruction), the
   vision tower now fixed. This is the preset's counterpart of the 7B's grounding pretraining.
   One attention head (``LOOKUP_HEAD``, in the last layer) is also taught where to look: at the
   positions that write the box's first corner (x0, y0), its attention mass on the named object's
   image tokens in the first frame is maximised (renderer's per-pixel ids). From the map loss
   alone it stays at chance (its share of the image tokens) and lateral position is not
   learned; with it the box is read from the object's tokens.

During SFT (``sft.lookup_trainer``) the lookup head can be kept on the first frame's object
(:func:`lookup_batch`) and a second head (``COPY_HEAD``) taught to attend, at the position that
predicts each map entry, to the question's word for the entry's object (:func:`copy_batch`),
a third (``NUMBER_HEAD``), at the position that predicts a coordinate in the think, to the
map's positions holding that coordinate (:func:`number_batch`), and a fourth (``OPTION_HEAD``),
at the position that predicts an option letter, to the text of that option in the question
(:func:`option_batch`). Two more serve the objects only a later frame shows, whose box the
first frame's lookup cannot read: a first-layer head (``FRAME_HEAD``) is taught, at image
tokens, to attend to the earlier frames' image tokens, or for the first frame's to the
sequence's first token (:func:`frame_batch`), so that every image token carries whether its
frame is the first; and a last-layer head (``SEEK_HEAD``), at the positions writing a map entry's
x0 and y0, to the entry's object in every frame that shows it (:func:`lookup_batch` over
:func:`clip_tokens`), so that the entry reads which frame shows its object.

Boxes are in meters in the frame's own map frame (spec: x to the camera's right, y forward,
origin at the camera). Each stage reports held-out metrics (``perception.json`` in the preset).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .benchmark import pearson
from .catalog import CATEGORIES
from .cogmap import CogMap, format_map
from .prompting import INSTRUCTION
from .renderer import Renderer
from .simulator import make_scene, sample_indices
from .threads import adaptive_threads, timed
from .training import budget_spent

if TYPE_CHECKING:
    import torch

CATEGORY_INDEX = {c.name: i for i, c in enumerate(CATEGORIES)}
N_CAT = len(CATEGORIES)
N_LABELS = N_CAT + 4 * N_CAT + 2  # coverage | a box per category | token row, column
TOKEN_PX = 28  # a merged token: 2 x 2 patches of 14 px
BOX_SCALE = 4.0  # boxes are regressed in units of 4 m
# (layer from the end, head) of the language model taught to attend to the named object. Not
# the first layer: frame tokens enter it as the vision tower made them, the same whichever frame,
# and rotary phases cannot tell frames apart at a prompt's length, so a first-layer head reads a
# 4-frame clip's object from every frame that shows it (README, Perception); in the last layer
# the first frame's tokens differ (causal attention: they alone see no other frame)
LOOKUP_HEAD = (-1, 0)
# the lookup loss's queries: the positions writing a map entry's first this many coordinates
# (x0, y0). At x1 and y1 too, the two reads' noise put x_max below x_min in 46 of 421 QVS boxes
LOOKUP_COORDS = 2
# under a build budget (perceive's max_seconds), the vision stage's most share of it: ~49 of the
# small preset's ~300 s unbudgeted build here
VISION_SHARE = 0.2
COPY_HEAD = (-1, 1)  # (layer from the end, head) taught during SFT to copy the question's names
# (layer from the end, head from the end) taught during SFT to copy the map's numbers; on a
# preset with two heads per layer (tiny) it is the copy head
NUMBER_HEAD = (-1, -1)
# (layer from the end, head) taught during SFT to find the letter of the option the think names;
# on the small preset (4 heads) it shares its keys with the number head (disjoint targets: map
# numbers, option texts); with two heads a layer (tiny) it is the last layer's head 0
OPTION_HEAD = (-1, 2)
# (layer, head) taught during SFT, at image tokens, to attend to the earlier frames' image tokens
# (the first frame's: to the sequence's first token): its value says whether a token's frame is
# the first, which the vision tower cannot (it sees one frame at a time). The first layer, so
# that the last layer's heads read it with the object; on a one-layer preset (tiny) it is the
# lookup head (disjoint queries: image tokens, map entries)
FRAME_HEAD = (0, 0)
FRAME_QUERIES = 2  # image tokens per frame whose frame head is taught, spread over the frame
# (layer from the end, head) taught during SFT, at the positions writing a map entry's x0 and
# y0, to attend to the entry's object in every frame that shows it; on the small preset it is
# the number head's (disjoint queries: map entries, think coordinates), on tiny the copy head's
SEEK_HEAD = (-1, 3)


def camera_box(box, pose) -> tuple[float, float, float, float]:
    """A room-frame floor box (m) seen from ``pose``: the bounds of its corners in the camera's
    horizontal frame (x to its right, y forward, origin at the camera; m). Equals the map frame's
    box (``layout.scene_map``) when the pose's yaw is along a room axis."""
    a = math.radians(pose.yaw)
    right, fwd = (math.cos(a), math.sin(a)), (-math.sin(a), math.cos(a))
    corners = [(x - pose.x, y - pose.y) for x in (box[0], box[2]) for y in (box[1], box[3])]
    xs = [dx * right[0] + dy * right[1] for dx, dy in corners]
    ys = [dx * fwd[0] + dy * fwd[1] for dx, dy in corners]
    return min(xs), min(ys), max(xs), max(ys)


def token_labels(scene, pose, size: int, min_token_px: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The frame of ``scene`` from ``pose`` (size x size px) and its per-token labels, shape
    (tokens, N_LABELS), tokens row by row: the fraction of the token's pixels each category
    covers; for each category present, the floor box / BOX_SCALE (m, this frame's map frame) of
    the object of that category covering most of the token (at least ``min_token_px`` pixels);
    and the token's row and column in [-1, 1]."""
    if size % TOKEN_PX:
        raise ValueError(f"frame size {size} is not a multiple of {TOKEN_PX} px")
    frame = Renderer(size, size).render(scene, pose, dense=True)
    boxes = np.array([camera_box(o.box, pose) for o in scene.objects], np.float32)
    cats = np.array([CATEGORY_INDEX[o.name] for o in scene.objects])
    g = size // TOKEN_PX
    labels = np.zeros((g, g, N_LABELS), np.float32)
    for r in range(g):
        for c in range(g):
            ids = frame.ids[r * TOKEN_PX : (r + 1) * TOKEN_PX, c * TOKEN_PX : (c + 1) * TOKEN_PX]
            shown = ids[ids >= 0]
            labels[r, c, -2:] = [(2 * r + 1) / g - 1, (2 * c + 1) / g - 1]
            if shown.size == 0:
                continue
            labels[r, c, :N_CAT] = np.bincount(cats[shown], minlength=N_CAT) / ids.size
            counts = np.bincount(shown, minlength=len(scene.objects))
            for k in np.argsort(-counts, kind="stable"):
                if counts[k] < min_token_px:
                    break
                slot = N_CAT + 4 * cats[k]
                if not labels[r, c, slot : slot + 4].any():
                    labels[r, c, slot : slot + 4] = boxes[k] / BOX_SCALE
    return frame.image, labels.reshape(g * g, N_LABELS)


def vision_examples(
    n_scenes: int, seed: int, size: int, per_scene: int = 4
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, token labels) pairs: ``per_scene`` frames (the first and random others) of each of
    ``n_scenes`` fresh scenes; seeded."""
    rng = random.Random(f"v2lo-perception:{seed}")
    out = []
    for s in range(n_scenes):
        scene = make_scene(f"perception{seed}-{s:05d}", seed)
        poses = scene.clips[0].poses
        picks = [0, *rng.sample(range(1, len(poses)), min(per_scene, len(poses)) - 1)]
        out += [token_labels(scene, poses[i], size) for i in picks]
    return out


def token_shares(ids: np.ndarray, k: int) -> np.ndarray:
    """Per merged token of a dense frame's object ids (raster order, as the vision tower emits
    them), the fraction of its pixels that object ``k`` covers."""
    g = ids.shape[0] // TOKEN_PX
    hit = (ids == k).reshape(g, TOKEN_PX, ids.shape[1] // TOKEN_PX, TOKEN_PX)
    return hit.mean(axis=(1, 3)).reshape(-1)


@dataclass(frozen=True)
class GroundingExample:
    """Frames of a clip (the first first), a question naming one to three objects the first
    frame shows, the answer (their map in the order named: the first frame's map frame, m), and
    per object the share of each merged token of the frames, frame after frame, that it covers
    in the first frame (0 in later frames: the lookup head's target is the first frame's view)."""

    images: tuple[np.ndarray, ...]
    map: CogMap
    tokens: tuple[tuple[float, ...], ...] = ()
    instructed: bool = False  # the question after the dataset's instruction, as rows have it
    revealed: bool = False  # names an object the first frame does not show (a later one does)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.map.objects)

    @property
    def prompt(self) -> str:
        question = grounding_prompt(self.names)
        return f"{INSTRUCTION}\n{question}" if self.instructed else question

    @property
    def target(self) -> str:
        return format_map(self.map)

    def named_tokens(self, i: int = 0, min_share: float = 0.05) -> list[int]:
        """Indices of the image tokens showing object ``i`` (at least ``min_share`` of their
        pixels; the best one when none reaches it)."""
        shares = self.tokens[i] if i < len(self.tokens) else ()
        picked = [t for t, v in enumerate(shares) if v >= min_share]
        if picked or not any(shares):
            return picked
        return [max(range(len(shares)), key=shares.__getitem__)]


def grounding_prompt(names: Sequence[str]) -> str:
    """The grounding question: 'Where is the X? ...' for one name, 'Where are the X, the Y and
    the Z? ...' for more."""
    if len(names) == 1:
        return f"Where is the {names[0]}? Its floor box in meters, in <map></map>."
    listed = ", the ".join(names[:-1]) + f" and the {names[-1]}"
    return f"Where are the {listed}? Their floor boxes in meters, in <map></map>."


def grounding_examples(
    n_scenes: int,
    seed: int,
    size: int,
    min_pixels: int = 8,
    most: int = 3,
    max_frames: int = 1,
    instructed: float = 0.0,
    revealed: float = 0.0,
) -> list[GroundingExample]:
    """For each of ``n_scenes`` fresh scenes, 1 to ``max_frames`` frames of its first clip
    (seeded count, sampled as the dataset samples them: the first frame always), and the
    objects the first frame shows (at least ``min_pixels`` pixels) that are the only ones of
    their category; one example per such object, naming it first and then up to ``most - 1``
    others of them (seeded count and choice). Boxes are the ground truth of the clip's map
    frame (the first frame's, 1 cm); each named object comes with the share of each merged
    token it covers in the first frame. Naming several trains what question maps need: copying
    each named object into the map, and reading its box from its tokens; several frames, that
    the map's frame is the first frame's, where a later frame may show the object elsewhere.
    A seeded ``instructed`` share of the scenes asks after the dataset's instruction: the
    questions then stand as far from the frames as the dataset's do. With ``revealed`` > 0, a
    seeded share of the objects that only a later frame shows (none of their pixels in the first,
    ``min_pixels`` in a later one; unique category) get an example each too, naming that object
    alone: its box in the first frame's map frame, its token shares those of the later frames
    (what a 4-frame question's map needs for objects the camera's turn reveals)."""
    renderer = Renderer(size, size)
    rng = random.Random(f"v2lo-grounding-examples:{seed}")
    per_frame = (size // TOKEN_PX) ** 2
    out = []
    for s in range(n_scenes):
        scene = make_scene(f"grounding{seed}-{s:05d}", seed)
        clip = scene.clips[0]
        n_frames = rng.randint(1, max_frames) if max_frames > 1 else 1
        told = instructed > 0 and rng.random() < instructed
        picks = sample_indices(len(clip.poses), n_frames)
        frame = renderer.render(scene, clip.poses[picks[0]], dense=True)
        dense = revealed > 0 and len(picks) > 1
        rest = [renderer.render(scene, clip.poses[i], dense=dense) for i in picks[1:]]
        later = [f.image for f in rest]
        pad = (0.0,) * (per_frame * len(later))
        truth = scene.gt_map(clip)
        shown = [
            k
            for k, (obj, pixels) in enumerate(zip(truth.objects, frame.visible_pixels, strict=True))
            if pixels >= min_pixels and truth.count(obj.name) == 1
        ]
        for k in shown:
            others = [j for j in shown if j != k]
            picked = [k, *rng.sample(others, min(len(others), rng.randrange(most)))]
            objects = CogMap(tuple(truth.objects[j] for j in picked)).rounded()
            shares = tuple(
                tuple(float(v) for v in token_shares(frame.ids, j)) + pad for j in picked
            )
            out.append(GroundingExample((frame.image, *later), objects, shares, told))
        if not dense:
            continue
        for k, obj in enumerate(truth.objects):
            seen = max(f.visible_pixels[k] for f in rest)
            if frame.visible_pixels[k] or seen < min_pixels or truth.count(obj.name) != 1:
                continue
            if rng.random() >= revealed:
                continue
            shares = (0.0,) * per_frame + tuple(
                float(v) for f in rest for v in token_shares(f.ids, k)
            )
            objects = CogMap((obj,)).rounded()
            out.append(GroundingExample((frame.image, *later), objects, (shares,), told, True))
    return out


def _r(a, b) -> float | None:
    """:func:`~v2lo_utils.benchmark.pearson` of two 1-D arrays or tensors."""
    return pearson([float(v) for v in a], [float(v) for v in b])


# ---------------------------------------------------------------------------------------------
# training (torch from here on)


def _image_features(model, image_processor, images):
    """The vision tower's merged tokens of ``images``, all frames' tokens in one (tokens, hidden)."""
    import torch

    enc = image_processor(images=list(images), return_tensors="pt")
    feats = model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"])
    return torch.cat(list(feats.pooler_output))


def pretrain_vision(
    model,
    image_processor,
    train: list,
    val: list,
    steps: int,
    batch: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    max_seconds: float = 0.0,
) -> dict:
    """Stage 1: train the vision tower (and a throwaway linear head) to regress each token's
    labels, for ``steps`` steps or until ``max_seconds`` of wall-clock time have passed (0: no
    budget); returns the steps reached and held-out metrics: Pearson r of the first box corner
    (x0 lateral, y0 depth) per token where a box is labelled, and of the frame-mean per category
    slot."""
    import torch

    torch.manual_seed(seed)
    head = torch.nn.Linear(model.config.text_config.hidden_size, N_LABELS)
    visual = model.model.visual
    opt = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=lr)
    weight = torch.tensor([4.0] * (5 * N_CAT) + [1.0, 1.0])
    gen = torch.Generator().manual_seed(seed)

    def loss_on(items):
        pred = head(_image_features(model, image_processor, [x[0] for x in items]))
        target = torch.from_numpy(np.concatenate([x[1] for x in items]))
        return 10 * (((pred - target) ** 2) * weight).mean(), pred, target

    t0, done = time.perf_counter(), 0
    model.train()
    with adaptive_threads() as chooser:
        while done < steps and not budget_spent(t0, max_seconds):
            with timed(chooser):
                idx = torch.randint(0, len(train), (batch,), generator=gen).tolist()
                loss, _, _ = loss_on([train[i] for i in idx])
                loss.backward()
                opt.step()
                opt.zero_grad()
            done += 1
    model.eval()
    with torch.no_grad():
        val_loss, pred, target = loss_on(val)
    pb = pred[:, N_CAT : 5 * N_CAT].reshape(len(val), -1, N_CAT, 4)
    tb = target[:, N_CAT : 5 * N_CAT].reshape(len(val), -1, N_CAT, 4)
    has = tb.abs().sum(-1) > 0
    pooled_has = has.any(1)
    pooled_p, pooled_t = pb.mean(1)[pooled_has], tb.mean(1)[pooled_has]
    return {
        "steps": done,
        "max_steps": steps,
        "stopped_by_budget": done < steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "val_loss": float(val_loss),
        "token_x0_r": _r(pb[has][:, 0], tb[has][:, 0]),
        "token_y0_r": _r(pb[has][:, 1], tb[has][:, 1]),
        "pooled_x0_r": _r(pooled_p[:, 0], pooled_t[:, 0]),
        "val_frames": len(val),
        "threads": chooser.summary() if chooser else None,
    }


def _sft_rows(examples: Sequence[GroundingExample]) -> list[dict]:
    from PIL import Image

    return [
        {
            "prompt": [
                {
                    "role": "user",
                    "content": [
                        *({"type": "image"} for _ in e.images),
                        {"type": "text", "text": e.prompt},
                    ],
                }
            ],
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": e.target}]}],
            "images": [Image.fromarray(im) for im in e.images],
        }
        for e in examples
    ]


@contextmanager
def _eager_attention(model):
    """Switch ``model`` to the eager attention kernel (the one that returns attention weights)
    for the duration; restored after."""
    configs = {
        id(m.config): m.config
        for m in model.modules()
        if hasattr(getattr(m, "config", None), "_attn_implementation")
    }
    saved = {k: c._attn_implementation for k, c in configs.items()}
    for c in configs.values():
        c._attn_implementation = "eager"
    try:
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = saved[k]


def _lookup(batch, examples: Sequence[GroundingExample], image_token_id: int, coord_ids: set):
    """Per row, per named object: the positions whose logits give the object's first
    ``LOOKUP_COORDS`` coordinates (the tokens before them; the first is the map entry's opening,
    which holds the name), the positions of the image tokens showing the object, and the
    positions of its x0 and y0 in the labels. A row whose coordinates are not four single tokens
    per object (a value off the coordinate tokens), or with an object on no image token, gets
    none: entry i of a row is always object i."""
    out = []
    for j, e in enumerate(examples):
        labels, ids = batch["labels"][j].tolist(), batch["input_ids"][j].tolist()
        coords = [p for p, t in enumerate(labels) if t in coord_ids]
        image = [p for p, t in enumerate(ids) if t == image_token_id]
        n = len(e.names) if len(coords) == 4 * len(e.names) else 0
        named = [[image[t] for t in e.named_tokens(i) if t < len(image)] for i in range(n)]
        ok = all(named)
        out.append(
            [
                (
                    [c - 1 for c in coords[4 * i : 4 * i + LOOKUP_COORDS]],
                    nm,
                    coords[4 * i : 4 * i + 2],
                )
                for i, nm in enumerate(named)
                if ok
            ]
        )
    return out


def _lookup_loss(attentions, where) -> torch.Tensor | None:
    """Mean over named objects and their queries (:func:`_lookup`) of -log(the lookup head's
    attention mass on the object's tokens at the position writing the coordinate)."""
    import torch

    layer, head = LOOKUP_HEAD
    att = attentions[layer][:, head]
    masses = [
        att[j, q, named].sum() for j, row in enumerate(where) for qs, named, _ in row for q in qs
    ]
    return lookup_nll(torch.stack(masses)) if masses else None


def lookup_nll(mass: torch.Tensor) -> torch.Tensor:
    """The lookup loss from the head's attention masses on the named tokens: mean -log(mass)."""
    import torch

    return -torch.log(mass + 1e-6).mean()


def first_frame_tokens(ds, rows: Sequence[dict], min_share: float = 0.05) -> list[list[list[int]]]:
    """Per dataset row, per object of its map (in order): the merged tokens of the row's first
    frame (raster order) that show the object (at least ``min_share`` of their pixels); [] for an
    object the first frame does not show, or one no single scene object matches. The targets of
    the lookup head during SFT (:func:`lookup_batch`); each clip's first frame is rendered once."""
    return _row_tokens(ds, rows, min_share, every_frame=False)


def clip_tokens(ds, rows: Sequence[dict], min_share: float = 0.05) -> list[list[list[int]]]:
    """Per dataset row, per object of its map (in order): the merged tokens of all the row's
    frames that show the object, numbered as the row's image tokens run (frame after frame,
    raster order in each); [] for an object no single scene object matches. The targets of the
    seek head during SFT (:func:`lookup_batch` with ``per_frame`` None); each frame is rendered
    once."""
    return _row_tokens(ds, rows, min_share, every_frame=True)


def _row_tokens(ds, rows: Sequence[dict], min_share: float, every_frame: bool) -> list:
    size = ds.manifest["config"]["image_size"]
    per_frame = (size // TOKEN_PX) ** 2
    renderer, scenes, frames = Renderer(size, size), {}, {}
    out = []
    for row in rows:
        sid = row["scene_id"]
        scene = scenes.get(sid) or scenes.setdefault(sid, ds.scene(sid)[0])
        clip = scene.clip(row["clip_id"])
        truth = scene.gt_map(clip).objects
        matches = [
            [
                k
                for k, o in enumerate(truth)
                if o.name == entry["object_name"]
                and max(abs(a - b) for a, b in zip(o.bbox, entry["bbox"], strict=True)) < 0.006
            ]
            for entry in row["map"]
        ]
        per_object: list[list[int]] = [[] for _ in row["map"]]
        shown = row["frame_indices"] if every_frame else row["frame_indices"][:1]
        for n, index in enumerate(shown):
            key = (sid, clip.clip_id, index)
            if key not in frames:
                ids = renderer.render(scene, clip.poses[index], dense=True).ids
                frames[key] = [
                    [t for t, v in enumerate(token_shares(ids, k)) if v >= min_share]
                    for k in range(len(scene.objects))
                ]
            for i, match in enumerate(matches):
                if len(match) == 1:
                    per_object[i] += [t + n * per_frame for t in frames[key][match[0]]]
        out.append(per_object)
    return out


def lookup_batch(
    batch,
    tokens: Sequence[Sequence[Sequence[int]]],
    image_token_id: int,
    entry_ids: set,
    per_frame: int | None,
    coord_ids: set,
    name: str = "lookup",
) -> dict:
    """The lookup head's targets in a collated batch: for each map entry of each row whose
    entries (``entry_ids``: the map-entry openings, one token each) are as many as its objects in
    ``tokens`` (:func:`first_frame_tokens`), and whose object the first frame shows: the row,
    the positions writing the entry's first ``LOOKUP_COORDS`` coordinates (the opening, then the
    token before each next coordinate token of ``coord_ids``; fewer where the map is cut short),
    each with the positions of the object's image tokens in the first frame (``per_frame``
    tokens a frame). Tensors ``<name>_rows`` (N), ``<name>_queries`` (N) and ``<name>_keys``
    (N x sequence, bool). With ``per_frame`` None, ``tokens`` number all the row's image tokens
    (:func:`clip_tokens`): the seek head's targets, the object in every frame."""

    length = batch["input_ids"].shape[1]
    found: list[tuple[int, int, list[int]]] = []
    for j, objects in enumerate(tokens):
        labels, ids = batch["labels"][j].tolist(), batch["input_ids"][j].tolist()
        entries = [p for p, t in enumerate(labels) if t in entry_ids]
        if len(entries) != len(objects):
            continue
        coords = [p for p, t in enumerate(labels) if t in coord_ids]
        image = [p for p, t in enumerate(ids) if t == image_token_id][:per_frame]  # None: all
        for n, (q, shown) in enumerate(zip(entries, objects, strict=True)):
            where = [image[t] for t in shown if t < len(image)]
            if not where:
                continue
            end = entries[n + 1] if n + 1 < len(entries) else length
            later = [c - 1 for c in coords if q + 1 < c < end][: LOOKUP_COORDS - 1]
            found.extend((j, p, where) for p in (q, *later))
    return head_targets(name, length, found)


def frame_batch(batch, image_token_id: int, per_frame: int) -> dict:
    """The frame head's targets (``FRAME_HEAD``) in a collated batch: for ``FRAME_QUERIES``
    image tokens of each frame of each row (``per_frame`` tokens a frame; spread over it), the
    positions its attention should fall on: the earlier frames' image tokens, or, in the first
    frame, the sequence's first token. Tensors ``frame_rows`` (N), ``frame_queries`` (N) and
    ``frame_keys`` (N x sequence, bool)."""
    length = batch["input_ids"].shape[1]
    found: list[tuple[int, int, list[int]]] = []
    step = max(1, per_frame // FRAME_QUERIES)
    for j in range(batch["input_ids"].shape[0]):
        image = [p for p, t in enumerate(batch["input_ids"][j].tolist()) if t == image_token_id]
        for f in range(len(image) // per_frame):
            own = image[f * per_frame : (f + 1) * per_frame]
            keys = image[: f * per_frame] or [0]
            found.extend((j, q, keys) for q in own[step // 2 :: step][:FRAME_QUERIES])
    return head_targets("frame", length, found)


def head_targets(name: str, length: int, found: list[tuple[int, int, list[int]]]) -> dict:
    """A head's targets as the trainer reads them: ``found`` holds (row, query position, key
    positions) triples; tensors ``<name>_rows`` (N), ``<name>_queries`` (N) and ``<name>_keys``
    (N x ``length``, bool)."""
    import torch

    keys = torch.zeros(len(found), length, dtype=torch.bool)
    for n, (_, _, where) in enumerate(found):
        keys[n, where] = True
    return {
        f"{name}_rows": torch.tensor([f[0] for f in found], dtype=torch.long),
        f"{name}_queries": torch.tensor([f[1] for f in found], dtype=torch.long),
        f"{name}_keys": keys,
    }


def copy_batch(batch, entry_names: dict[int, int]) -> dict:
    """The copy head's targets (``COPY_HEAD``) in a collated batch: for each map entry of each
    row (``entry_names``: a map-entry opening's id -> its category name's id) whose name the
    prompt holds, the row, the position predicting the opening (the token before it) and the
    prompt's positions of the name (every mention). Tensors ``copy_rows`` (N), ``copy_queries``
    (N) and ``copy_keys`` (N x sequence, bool): the head that writes the entry attends to the
    question's word for it, which is how a map comes to list the question's objects."""

    length = batch["input_ids"].shape[1]
    found: list[tuple[int, int, list[int]]] = []
    for j in range(batch["input_ids"].shape[0]):
        labels, ids = batch["labels"][j].tolist(), batch["input_ids"][j].tolist()
        start = next((p for p, t in enumerate(labels) if t != -100), length)
        mentions: dict[int, list[int]] = {}
        for p, i in enumerate(ids[:start]):
            mentions.setdefault(i, []).append(p)
        for q, t in enumerate(labels):
            where = mentions.get(entry_names[t], []) if t in entry_names else []
            if where and q > 0:
                found.append((j, q - 1, where))
    return head_targets("copy", length, found)


def number_batch(batch, coord_ids: set[int], close_ids: set[int]) -> dict:
    """The number head's targets (``NUMBER_HEAD``) in a collated batch: for each coordinate token
    (``coord_ids``) of each row's completion after its map (which ends at the completion's first
    token in ``close_ids``, those holding ``</``) that the map also holds, the row, the position
    predicting it and the map's positions of that token. Tensors ``number_rows`` (N),
    ``number_queries`` (N) and ``number_keys`` (N x sequence, bool): attending there and copying
    gives the think's number, so the think's copies of the map come from the map, not from priors.
    """

    length = batch["input_ids"].shape[1]
    found: list[tuple[int, int, list[int]]] = []
    for j in range(batch["input_ids"].shape[0]):
        labels = batch["labels"][j].tolist()
        start = next((p for p, t in enumerate(labels) if t != -100), length)
        end = next((p for p in range(start, length) if labels[p] in close_ids), length)
        held: dict[int, list[int]] = {}
        for p in range(start, end):
            if labels[p] in coord_ids:
                held.setdefault(labels[p], []).append(p)
        for q in range(end + 1, length):
            where = held.get(labels[q], [])
            if where:
                found.append((j, q - 1, where))
    return head_targets("number", length, found)


def option_batch(
    batch,
    letter_ids: dict[int, int],
    dot_id: int,
    stop_ids: set[int],
    close_ids: set[int],
    after_ids: set[int],
) -> dict:
    """The option head's targets (``OPTION_HEAD``) in a collated batch: for each option letter
    in each row's completion after its map (which ends at the first token in ``close_ids``),
    standing alone (the next token in ``after_ids``: not a word's continuation), and whose
    option the prompt lists: the row, the position predicting the letter and the prompt's
    positions of that option's text. ``letter_ids`` maps the tokens ending in a letter after no
    letter or digit ('C', ' C', '>C') to the letter alone's id. An option is a letter alone,
    then ``dot_id``, then its text up to the first token in ``stop_ids`` (newlines, special
    tokens). Tensors ``option_rows`` (N), ``option_queries`` (N) and ``option_keys`` (N x
    sequence, bool): the text's tokens can carry their letter (causal attention sees it), so
    attending there and copying gives the letter of the option the think named."""

    length = batch["input_ids"].shape[1]
    found: list[tuple[int, int, list[int]]] = []
    letters = set(letter_ids.values())
    for j in range(batch["input_ids"].shape[0]):
        labels, ids = batch["labels"][j].tolist(), batch["input_ids"][j].tolist()
        start = next((p for p, t in enumerate(labels) if t != -100), length)
        texts: dict[int, list[int]] = {}
        for p in range(1, start - 1):
            if ids[p] in letters and ids[p + 1] == dot_id and ids[p - 1] in stop_ids:
                end = next((e for e in range(p + 2, start) if ids[e] in stop_ids), start)
                texts[ids[p]] = list(range(p + 2, end))
        end = next((p for p in range(start, length) if labels[p] in close_ids), length)
        for q in range(end + 1, length - 1):
            text = texts.get(letter_ids.get(labels[q], -1))
            if text and labels[q + 1] in after_ids:
                found.append((j, q - 1, text))
    return head_targets("option", length, found)


def lookup_attention(model, layer: int = LOOKUP_HEAD[0]):
    """The language model's attention layer ``layer`` (negative: from the end; by default the
    one holding ``LOOKUP_HEAD``)."""
    layers = {
        m.layer_idx: m
        for m in model.modules()
        if hasattr(m, "q_proj") and getattr(m, "layer_idx", None) is not None
    }
    want = layer + len(layers) if layer < 0 else layer
    if want not in layers:
        raise ValueError(f"no language attention layer with q_proj at layer {layer}")
    return layers[want]


def lookup_mass(
    attn, hidden, position_embeddings, attention_mask, rows, queries, keys, head=LOOKUP_HEAD[1]
):
    """Head ``head``'s attention mass (of layer ``attn``; by default the lookup head's; negative:
    from the end) on ``keys`` (N x T, bool) from positions ``queries`` of batch rows ``rows``,
    computed from the layer's input (``hidden``: B x T x H after its norm;
    ``position_embeddings``: its rotary cos and sin, B x T x head_dim) as the layer computes its
    weights: its q and k projections, the rotary embedding, a causal softmax over the row's
    positions that ``attention_mask`` (B x T) keeps. Differentiable; N values in [0, 1]."""
    import torch
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import rotate_half

    d = attn.head_dim
    head %= attn.q_proj.out_features // d  # negative: from the end
    group = head // attn.num_key_value_groups
    n = torch.arange(len(rows), device=hidden.device)
    cos, sin = (e[rows] for e in position_embeddings)  # N x T x d
    h = hidden[rows]
    q = attn.q_proj(h[n, queries])[:, head * d : (head + 1) * d]
    k = attn.k_proj(h)[..., group * d : (group + 1) * d]
    q = q * cos[n, queries] + rotate_half(q) * sin[n, queries]
    k = k * cos + rotate_half(k) * sin
    scores = (k @ q.unsqueeze(-1)).squeeze(-1) * attn.scaling
    steps = torch.arange(hidden.shape[1], device=hidden.device)
    keep = (steps[None, :] <= queries[:, None]) & attention_mask[rows].bool()
    weights = torch.softmax(scores.masked_fill(~keep, float("-inf")).float(), dim=-1)
    return (weights * keys).sum(-1)


def grounding_probe(model, processor, examples: Sequence[GroundingExample], batch: int = 16):
    """Held-out grounding, teacher-forced, over every named object: the model's expected value
    of the first box corner (x0, y0) over the coordinate tokens, against the truth; Pearson r
    per axis, the mean corner error (m) and that of the training-free prior (every corner at the
    held-out mean); and the lookup head's attention mass on the named object's tokens with the
    share of the image tokens they are (what uniform attention would give)."""
    import torch

    from .presets import COORD_TOKENS
    from .sft import FrameLoadingCollator

    tok = processor.tokenizer
    coord_ids = tok.convert_tokens_to_ids(list(COORD_TOKENS))
    values = torch.tensor([float(c) for c in COORD_TOKENS])
    is_coord = set(coord_ids)
    collate = FrameLoadingCollator(processor)
    rows = _sft_rows(examples)
    pred, true, mass, chance, frames, told, later = [], [], [], [], [], [], []
    model.eval()
    with torch.no_grad(), _eager_attention(model):
        for i in range(0, len(rows), batch):
            b = collate(rows[i : i + batch])
            chunk = examples[i : i + batch]
            out = model(**{k: v for k, v in b.items() if k != "labels"}, output_attentions=True)
            att = out.attentions[LOOKUP_HEAD[0]][:, LOOKUP_HEAD[1]]
            where = _lookup(b, chunk, model.config.image_token_id, is_coord)
            for j, (e, row) in enumerate(zip(chunk, where, strict=True)):
                for i, (qs, named, xy) in enumerate(row):  # entry i is object i
                    mass.append(float(att[j, qs[0], named].sum()))
                    chance.append(len(named) / len(e.tokens[i]))
                    logits = out.logits[j, [p - 1 for p in xy]][:, coord_ids].float()
                    pred.append((torch.softmax(logits, -1) @ values).tolist())
                    true.append(list(e.map.objects[i].bbox[:2]))
                    frames.append(len(e.images))
                    told.append(e.instructed)
                    later.append(e.revealed)
    figures = [np.array(pred), np.array(true), np.array(mass), np.array(chance)]
    out = _probe_figures(*figures)
    # the same figures on the examples of several frames, after the instruction, and on the
    # objects the first frame shows and those only a later frame does
    subsets = {
        "first_frame": ~np.array(later, bool),
        "multi_frame": np.array(frames) > 1,
        "instructed": np.array(told, bool),
        "revealed": np.array(later, bool),
    }
    for key, m in subsets.items():
        if m.any():
            out[key] = _probe_figures(*(f[m] for f in figures))
    return out


def _probe_figures(p: np.ndarray, t: np.ndarray, mass: np.ndarray, chance: np.ndarray) -> dict:
    if len(p) == 0:
        return {"n": 0}
    return {
        "n": len(p),
        "x0_r": _r(p[:, 0], t[:, 0]),
        "y0_r": _r(p[:, 1], t[:, 1]),
        "corner_error_m": float(np.linalg.norm(p - t, axis=1).mean()),
        "prior_error_m": float(np.linalg.norm(t - t.mean(0), axis=1).mean()),
        "lookup_attention": float(mass.mean()),
        "lookup_uniform": float(chance.mean()),
    }


def train_grounding(
    model,
    processor,
    train: Sequence[GroundingExample],
    steps: int,
    batch: int = 8,
    lr: float = 1e-3,
    warmup: int = 50,
    seed: int = 0,
    lookup_weight: float = 1.0,
    max_seconds: float = 0.0,
) -> dict:
    """Stage 2: the language model (and merger) learns to write a named object's box, the vision
    tower fixed; a plain loop over :class:`~v2lo_utils.sft.FrameLoadingCollator` batches (loss
    on the answer only) plus ``lookup_weight`` x the lookup head's loss (:func:`_lookup_loss`),
    for ``steps`` steps or until ``max_seconds`` of wall-clock time have passed (0: no budget)."""
    import torch

    from .presets import COORD_TOKENS
    from .sft import FrameLoadingCollator

    visual = model.model.visual
    frozen = [p for p in visual.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad = False
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    collate = FrameLoadingCollator(processor)
    coord_ids = set(processor.tokenizer.convert_tokens_to_ids(list(COORD_TOKENS)))
    gen = random.Random(f"v2lo-grounding:{seed}")
    t0, losses, lookups = time.perf_counter(), [], []
    model.train()
    with _eager_attention(model), adaptive_threads() as chooser:
        while len(losses) < steps and not budget_spent(t0, max_seconds):
            chunk = gen.sample(train, min(batch, len(train)))
            b = collate(_sft_rows(chunk))
            with timed(chooser):
                out = model(**b, output_attentions=lookup_weight > 0)
                loss = out.loss
                extra = None
                if lookup_weight > 0:
                    where = _lookup(b, chunk, model.config.image_token_id, coord_ids)
                    extra = _lookup_loss(out.attentions, where)
                if extra is not None:
                    loss = loss + lookup_weight * extra
                    lookups.append(float(extra.detach()))
                loss.backward()
                opt.step()
                sched.step()
                opt.zero_grad()
            losses.append(float(out.loss.detach()))
    for p in frozen:
        p.requires_grad = True
    model.eval()
    tail = losses[-50:] or [float("nan")]
    return {
        "steps": len(losses),
        "max_steps": steps,
        "stopped_by_budget": len(losses) < steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "final_loss": sum(tail) / len(tail),
        "lookup_weight": lookup_weight,
        "final_lookup_loss": sum(lookups[-50:]) / len(lookups[-50:]) if lookups else None,
        "threads": chooser.summary() if chooser else None,
    }


def perceive(
    model,
    processor,
    size: int,
    vision_steps: int,
    grounding_steps: int,
    seed: int = 0,
    grounding_frames: int = 1,
    grounding_instructed: float = 0.0,
    max_seconds: float = 0.0,
    grounding_revealed: float = 0.0,
):
    """Both stages on a freshly built preset (in place), grounding on clips of 1 to
    ``grounding_frames`` frames (and a ``grounding_revealed`` share of the objects only a later
    frame shows: :func:`grounding_examples`); returns the metrics for ``perception.json``:
    held-out vision and grounding figures, grounding before and after, the steps each reached.

    ``max_seconds`` (0: none): the wall-clock budget of the two stages' training together;
    the vision stage may take ``VISION_SHARE`` of it, grounding the rest, each stopping early
    where its steps take longer (a slow machine builds a less trained preset, in bounded time)."""
    import torch

    out: dict = {"seed": seed, "image_size": size, "max_seconds": max_seconds}
    t0 = time.perf_counter()
    if vision_steps:
        train = vision_examples(max(8, vision_steps // 2), seed + 1, size)
        val = vision_examples(40, seed + 2, size, per_scene=1)
        out["vision"] = pretrain_vision(
            model,
            processor.image_processor,
            train,
            val,
            vision_steps,
            seed=seed,
            max_seconds=VISION_SHARE * max_seconds,
        )
    if grounding_steps:
        mix = {
            "max_frames": grounding_frames,
            "instructed": grounding_instructed,
            "revealed": grounding_revealed,
        }
        train = grounding_examples(max(8, grounding_steps // 2), seed + 3, size, **mix)
        val = grounding_examples(60, seed + 4, size, **mix)
        out["grounding_before"] = grounding_probe(model, processor, val)
        torch.manual_seed(seed)
        spent = (out.get("vision") or {}).get("seconds", 0.0)
        left = max(1.0, max_seconds - spent) if max_seconds else 0.0
        out["grounding"] = train_grounding(
            model, processor, train, grounding_steps, seed=seed, max_seconds=left
        )
        out["grounding_after"] = grounding_probe(model, processor, val)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out
