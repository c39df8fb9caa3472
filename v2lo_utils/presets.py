"""Offline presets: randomly initialised Qwen2.5-VL models built by the project itself.

:func:`create_preset` builds a Qwen2.5-VL of a preset size fully offline: a byte-level BPE
tokenizer trained on the project's own prompts and targets, with Qwen's special tokens and one
token per map coordinate (-8.0 ... 8.0 m in 0.1 steps), TRL's Qwen2.5-VL chat template (from
TRL's wheel), an image-only processor, and for the ``small`` preset the perception stages of
:mod:`~v2lo_utils.perception`. It is saved as an ordinary Hugging Face folder that reloads with
``HF_HUB_OFFLINE=1``. Loading it (or any checkpoint) is :mod:`~v2lo_utils.models`' job.

The image-only processor exists because the stock Qwen2.5-VL processor also builds a video
processor, which needs torchvision; frames are fed as a list of images instead.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

PRESET_FILE = "v2lo_preset.json"
PERCEPTION_FILE = "perception.json"  # a preset's perception stages: their held-out metrics
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
COORD_TOKENS = tuple(f"{i / 10:.1f}" for i in range(-80, 81))
PRESET_VERSION = 10  # bump when the preset recipe changes: cached presets are rebuilt


VISION_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the vision placeholder tokens: a sampled completion must never contain them (the
    model would then expect image features for them)."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


@dataclass(frozen=True)
class Preset:
    """Sizes of a randomly initialised Qwen2.5-VL (text decoder and vision tower)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vocab: int  # the tokenizer's BPE vocabulary (trained here)
    image_size: int  # px, square frames the processor keeps at native size
    vision_intermediate: int = 0  # 0: twice vision_hidden
    vision_fullatt: tuple[int, ...] = ()  # full-attention blocks; (): the last one
    tie_embeddings: bool = True
    padded_vocab: int = 0  # the model's embedding rows (>= the tokenizer's); 0: the tokenizer's
    vision_steps: int = 0  # perception stage 1 at build time (v2lo_utils.perception)
    grounding_steps: int = 0  # perception stage 2: named objects' boxes, the vision tower fixed
    grounding_frames: int = 1  # stage 2's clips have 1 to this many frames (the map: the first's)
    grounding_instructed: float = 0.0  # share of stage 2's questions after the instruction
    grounding_revealed: float = 0.0  # share of the objects only a later frame shows, asked too


PRESETS: dict[str, Preset] = {
    # the smallest that runs: for tests
    "tiny": Preset(32, 1, 2, 1, 64, 32, 1, 1, 400, 56),
    # the CPU demo: ~0.65 M parameters learned more in 12 minutes here than 2.2 M did
    "small": Preset(
        128,
        2,
        4,
        2,
        256,
        64,
        2,
        2,
        600,
        112,
        vision_steps=1000,
        grounding_steps=2000,
        grounding_frames=4,
        grounding_instructed=0.5,
    ),
}

# Qwen2.5-VL-7B's published shape, randomly initialised: the GPU benchmark's model (its memory
# and speed are the 7B's; it knows nothing). The tokenizer is the project's, padded to 152,064.
SHAPE_7B = Preset(
    hidden=3584,
    layers=28,
    heads=28,
    kv_heads=4,
    intermediate=18944,
    vision_hidden=1280,
    vision_depth=32,
    vision_heads=16,
    vocab=600,
    image_size=448,
    vision_intermediate=3420,
    vision_fullatt=(7, 15, 23, 31),
    tie_embeddings=False,
    padded_vocab=152064,
)


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def chat_template() -> str:
    """TRL's copy of the Qwen2.5-VL chat template (shipped in its wheel)."""
    return importlib.resources.files("trl").joinpath("chat_templates/qwen2_5_vl.jinja").read_text()


def _image_only_processor_class():
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL's processor without the video processor (no torchvision needed)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2_5_VLProcessor


def make_processor(tokenizer, image_size: int | None = None, image_processor=None):
    """The image-only processor; ``image_size`` pins frames to that many pixels (square)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if image_processor is None:
        pixels = (image_size or 224) ** 2
        image_processor = Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels)
    template = getattr(tokenizer, "chat_template", None) or chat_template()
    return _image_only_processor_class()(image_processor, tokenizer, chat_template=template)


def corpus(n_scenes: int = 300, seed: int = 0) -> list[str]:
    """Text the preset tokenizer is trained on: prompts and targets of random layouts."""
    from .layout import random_scene_map
    from .prompting import user_prompt
    from .questions import TASKS, generate_question, make_target

    rng = random.Random(f"v2lo-tokenizer:{seed}")
    texts = []
    for _ in range(n_scenes):
        scene = random_scene_map(rng, 10)
        for task in TASKS:
            q = generate_question(task, scene, rng)
            if q is not None:
                texts += [user_prompt(q), make_target(q, scene)]
    return texts


def category_tokens() -> tuple[str, ...]:
    """The furniture category names maps and questions use."""
    from .catalog import CATEGORIES

    return tuple(c.name for c in CATEGORIES)


def entry_tokens() -> tuple[str, ...]:
    """The opening of a map entry up to its first number, one per category (spec section 1):
    ``{"object_name": "<cat>", "bbox": [``. As one token, the position that writes an object's
    first coordinate holds the object's name itself, so reading its box from the frames is one
    attention step (the lookup of :mod:`~v2lo_utils.perception`), not two."""
    return tuple(f'{{"object_name": "{c}", "bbox": [' for c in category_tokens())


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts`` with Qwen2's own text pipeline (NFC, its
    pre-tokenizer regex, byte-level), so that it loads as a ``Qwen2Tokenizer`` in transformers 4
    and 5 and tokenises the same either way; Qwen's special tokens; one token per coordinate,
    per category name and per map-entry opening (:func:`entry_tokens`)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bpe = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]
    qwen = Qwen2Tokenizer(
        vocab=bpe["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    qwen.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], True)
    # one token per coordinate, per category name and per map-entry opening: copying a name
    # from the question into the map, or writing a coordinate, is then a single-token decision
    words = (*COORD_TOKENS, *category_tokens(), *entry_tokens())
    qwen.add_tokens([AddedToken(w, normalized=False) for w in words])
    qwen.chat_template = chat_template()
    return qwen


def coordinate_features(values, dim: int, seed: int = 0, periods=(32.0, 16.0, 8.0, 4.0, 2.0, 1.0)):
    """Smooth embeddings of coordinate values (m): cos and sin of each value at the given
    periods (m), spread over ``dim`` dimensions by a fixed random orthonormal map, scaled to the
    norm of a randomly initialised row. Nearby values get nearby rows, so a hidden state that
    scores one value also scores its neighbours (regression through the tied output head)."""
    import torch

    v = torch.as_tensor(values, dtype=torch.float32)[:, None]
    w = 2 * torch.pi / torch.tensor(periods)
    feats = torch.cat([torch.cos(v * w), torch.sin(v * w)], dim=1)  # (n, 2 * len(periods))
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, feats.shape[1], generator=gen))
    return feats @ basis.T * (0.02 * dim**0.5 / len(periods) ** 0.5)


def create_preset(name: str, out: str | Path, seed: int = 0, max_seconds: float = 0.0) -> Path:
    """Build the preset ``name`` into folder ``out`` (model, tokenizer, processor) and return it;
    ``max_seconds`` (0: none): the wall-clock budget of its perception stages' training."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return build_random_model(PRESETS[name], out, name, seed, max_seconds=max_seconds)


def random_model_config(p: Preset, tokenizer):
    """The Qwen2.5-VL config of shape ``p`` for ``tokenizer`` (its special-token ids)."""
    from transformers import Qwen2_5_VLConfig

    if p.padded_vocab and p.padded_vocab < len(tokenizer):
        raise ValueError(f"padded_vocab {p.padded_vocab} < the tokenizer's {len(tokenizer)}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=p.padded_vocab or len(tokenizer),
            hidden_size=p.hidden,
            intermediate_size=p.intermediate,
            num_hidden_layers=p.layers,
            num_attention_heads=p.heads,
            num_key_value_heads=p.kv_heads,
            max_position_embeddings=32768 if p.padded_vocab else 8192,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": _mrope_section(p.hidden // p.heads),
            },
            bos_token_id=None,
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=p.tie_embeddings,
        ),
        vision_config=dict(
            depth=p.vision_depth,
            hidden_size=p.vision_hidden,
            intermediate_size=p.vision_intermediate or 2 * p.vision_hidden,
            num_heads=p.vision_heads,
            out_hidden_size=p.hidden,
            fullatt_block_indexes=list(p.vision_fullatt or [p.vision_depth - 1]),
            window_size=112,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=p.tie_embeddings,
    )


def build_random_model(
    p: Preset,
    out: str | Path,
    name: str,
    seed: int = 0,
    device: str = "cpu",
    dtype=None,
    max_seconds: float = 0.0,
) -> Path:
    """A randomly initialised Qwen2.5-VL of shape ``p`` with the project's tokenizer and
    processor, saved into folder ``out`` (safetensors). ``device``/``dtype``: where and in what
    precision the weights are initialised (a 7B shape is built on the GPU in bf16).
    ``max_seconds``: the perception stages' wall-clock budget (0: none; recorded in the folder's
    preset file)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer(corpus(seed=seed), p.vocab)
    config = random_model_config(p, tokenizer)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    coord_ids = tokenizer.convert_tokens_to_ids(list(COORD_TOKENS))
    names = tokenizer.convert_tokens_to_ids(list(category_tokens()))
    entries = tokenizer.convert_tokens_to_ids(list(entry_tokens()))
    with torch.no_grad():  # tied: the same rows read and write coordinates
        emb = model.get_input_embeddings().weight
        feats = coordinate_features([float(c) for c in COORD_TOKENS], p.hidden, seed)
        emb[coord_ids] = 0.5 * emb[coord_ids] + feats.to(emb.device, emb.dtype)
        # a map entry starts as its name plus one shared "entry" row: a state that copies the
        # name "sofa" from the question already scores the entry that writes it
        emb[entries] = emb[names] + emb[entries].mean(0, keepdim=True) * len(entries) ** 0.5
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    processor = make_processor(tokenizer, p.image_size)
    perception = None
    if p.vision_steps or p.grounding_steps:
        from .perception import perceive

        perception = perceive(
            model,
            processor,
            p.image_size,
            p.vision_steps,
            p.grounding_steps,
            seed,
            grounding_frames=p.grounding_frames,
            grounding_instructed=p.grounding_instructed,
            max_seconds=max_seconds,
            grounding_revealed=p.grounding_revealed,
        )
    out = Path(out)
    # build beside the target and rename: concurrent builders (DDP ranks) cannot half-write it
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    standard_processor_files(tmp, p.image_size)
    if perception is not None:
        (tmp / PERCEPTION_FILE).write_text(json.dumps(perception, indent=2))
    (tmp / PRESET_FILE).write_text(
        json.dumps(
            {
                "preset": name,
                "version": PRESET_VERSION,
                "seed": seed,
                "max_seconds": max_seconds,
                **asdict(p),
            },
            indent=2,
        )
    )
    try:
        os.rename(tmp, out)
    except OSError:  # another process finished first: its folder serves (the same recipe;
        # under a build budget, steps may differ)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / PRESET_FILE).exists():
            raise
    return out


def standard_processor_files(folder: Path, image_size: int) -> None:
    """Make a saved preset readable by the standard Auto classes: the processor class named as the
    stock ``Qwen2_5_VLProcessor`` (which ``AutoProcessor`` builds where torchvision exists; here
    :func:`~v2lo_utils.models.load_processor` builds the image-only one), and the image
    processor's settings also in ``preprocessor_config.json`` with ``min_pixels``/``max_pixels``,
    where transformers 4 looks for them."""
    config = json.loads((folder / "processor_config.json").read_text())
    config["processor_class"] = "Qwen2_5_VLProcessor"
    (folder / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")
    pixels = image_size * image_size
    image = {**config["image_processor"], "min_pixels": pixels, "max_pixels": pixels}
    image["processor_class"] = "Qwen2_5_VLProcessor"
    (folder / "preprocessor_config.json").write_text(json.dumps(image, indent=2) + "\n")
    tok_path = folder / "tokenizer_config.json"
    tok = json.loads(tok_path.read_text())
    tok["processor_class"] = "Qwen2_5_VLProcessor"
    tok_path.write_text(json.dumps(tok, indent=2, ensure_ascii=False) + "\n")


def perception_metrics(folder: str | Path) -> dict | None:
    """The held-out metrics of a preset's perception stages (``perception.json``), or None for a
    folder without them (a real checkpoint, or a preset built without those stages)."""
    path = Path(folder) / PERCEPTION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def preset_version(folder: Path) -> int | None:
    """The recipe version of a cached preset folder; None when there is none."""
    return _preset_file(folder).get("version")


def preset_budget(folder: Path) -> float:
    """The perception stages' wall-clock budget a cached preset was built under (s; 0: none)."""
    return float(_preset_file(folder).get("max_seconds") or 0.0)


def _preset_file(folder: Path) -> dict:
    try:
        return json.loads((folder / PRESET_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
