"""Qwen2.5-VL models: an offline tiny preset, real checkpoints from a local folder, two backends.

- :func:`create_preset` builds a randomly initialised Qwen2.5-VL of a preset size fully offline:
  a byte-level BPE tokenizer trained on the project's own prompts and targets, with Qwen's special
  tokens and one token per map coordinate (-8.0 ... 8.0 m in 0.1 steps), TRL's Qwen2.5-VL chat
  template (from TRL's wheel), and an image-only processor. It is saved as an ordinary Hugging
  Face folder that reloads with ``HF_HUB_OFFLINE=1``.
- :func:`load_model` loads such a folder or any local Qwen2.5-VL checkpoint (the 7B included):
  with Unsloth's FastVisionModel when CUDA and unsloth are present, else transformers (+ PEFT).

The image-only processor exists because the stock Qwen2.5-VL processor also builds a video
processor, which needs torchvision; frames are fed as a list of images instead.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ModelFolderError

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
PRESET_VERSION = 7  # bump when the preset recipe changes: cached presets are rebuilt


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


PRESETS: dict[str, Preset] = {
    # the smallest that runs: for tests
    "tiny": Preset(32, 1, 2, 1, 64, 32, 1, 1, 400, 56),
    # the CPU demo: ~0.65 M parameters learned more in 12 minutes here than 2.2 M did
    "small": Preset(128, 2, 4, 2, 256, 64, 2, 2, 600, 112, vision_steps=1000, grounding_steps=2000),
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


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with Qwen's special tokens and one token per coordinate."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    # one token per coordinate and per category name: copying a name from the question into the
    # map, or writing a coordinate, is then a single-token decision
    tok.add_tokens([AddedToken(c, normalized=False) for c in (*COORD_TOKENS, *category_tokens())])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template(),
        model_max_length=32768,
    )


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


def create_preset(name: str, out: str | Path, seed: int = 0) -> Path:
    """Build the preset ``name`` into folder ``out`` (model, tokenizer, processor) and return it."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return build_random_model(PRESETS[name], out, name, seed)


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
    p: Preset, out: str | Path, name: str, seed: int = 0, device: str = "cpu", dtype=None
) -> Path:
    """A randomly initialised Qwen2.5-VL of shape ``p`` with the project's tokenizer and
    processor, saved into folder ``out`` (safetensors). ``device``/``dtype``: where and in what
    precision the weights are initialised (a 7B shape is built on the GPU in bf16)."""
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
    with torch.no_grad():  # tied: the same rows read and write coordinates
        emb = model.get_input_embeddings().weight
        feats = coordinate_features([float(c) for c in COORD_TOKENS], p.hidden, seed)
        emb[coord_ids] = 0.5 * emb[coord_ids] + feats.to(emb.device, emb.dtype)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    processor = make_processor(tokenizer, p.image_size)
    perception = None
    if p.vision_steps or p.grounding_steps:
        from .perception import perceive

        perception = perceive(
            model, processor, p.image_size, p.vision_steps, p.grounding_steps, seed
        )
    out = Path(out)
    # build beside the target and rename: concurrent builders (DDP ranks) cannot half-write it
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    if perception is not None:
        (tmp / PERCEPTION_FILE).write_text(json.dumps(perception, indent=2))
    (tmp / PRESET_FILE).write_text(
        json.dumps({"preset": name, "version": PRESET_VERSION, "seed": seed, **asdict(p)}, indent=2)
    )
    try:
        os.rename(tmp, out)
    except OSError:  # another process finished first; its folder is identical
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / PRESET_FILE).exists():
            raise
    return out


# ---------------------------------------------------------------------------------------------
# Loading


def adapter_base(path: str | Path) -> str | None:
    """The base model a PEFT adapter folder was trained on, or None if it is no adapter."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.is_file():
        return None
    try:
        base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{cfg}: not valid JSON") from err
    if not base:
        raise ModelFolderError(f"{cfg}: missing base_model_name_or_path")
    return base


def check_model_folder(path: str | Path) -> Path:
    """Raise ModelFolderError naming the path and what is missing unless it holds a Qwen2.5-VL."""
    p = Path(path)
    if not p.exists():
        raise ModelFolderError(f"{p}: no such model folder")
    if not p.is_dir():
        raise ModelFolderError(f"{p}: not a folder")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ModelFolderError(f"{p}: missing config.json")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ModelFolderError(f"{cfg}: not a valid JSON config") from err
    if model_type not in ("qwen2_5_vl", "qwen2_vl"):
        raise ModelFolderError(f"{cfg}: model_type is {model_type!r}, expected 'qwen2_5_vl'")
    if not (list(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").exists()):
        raise ModelFolderError(f"{p}: missing weights (*.safetensors)")
    if not ((p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()):
        raise ModelFolderError(f"{p}: missing tokenizer (tokenizer.json)")
    check_weights(p)
    return p


def check_weights(folder: str | Path) -> None:
    """Read the header of every ``*.safetensors`` file in ``folder`` (safetensors checks that it
    covers the whole file: a download cut short fails here); raise ModelFolderError naming the
    file when one is unreadable (safetensors' own error names no path)."""
    from safetensors import safe_open

    for f in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="numpy") as fh:
                fh.keys()
        except Exception as err:  # SafetensorError, OSError, ValueError: all mean "corrupt"
            raise ModelFolderError(f"{f}: not a readable safetensors file ({err})") from err


def model_fingerprint(folder: str | Path) -> str:
    """16 hex digits that change when the weights change: SHA-256 over config.json and, per
    ``*.safetensors`` file, its name, size and first and last MiB (cheap at 7B, and different
    for any two trained checkpoints)."""
    import hashlib

    h = hashlib.sha256()
    p = Path(folder)
    for f in [p / "config.json", *sorted(p.glob("*.safetensors")), p / "adapter_model.safetensors"]:
        if not f.is_file():
            continue
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def perception_metrics(folder: str | Path) -> dict | None:
    """The held-out metrics of a preset's perception stages (``perception.json``), or None for a
    folder without them (a real checkpoint, or a preset built without those stages)."""
    path = Path(folder) / PERCEPTION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def preset_version(folder: Path) -> int | None:
    """The recipe version of a cached preset folder; None when there is none."""
    try:
        return json.loads((folder / PRESET_FILE).read_text()).get("version")
    except (OSError, json.JSONDecodeError):
        return None


def resolve_source(source: str | Path, cache: str | Path = "outputs/models") -> Path:
    """A preset name ('tiny', 'small') becomes its folder under ``cache`` (built once); anything
    else must be a local model folder."""
    if str(source) in PRESETS:
        folder = Path(cache) / str(source)
        if preset_version(folder) != PRESET_VERSION:
            shutil.rmtree(folder, ignore_errors=True)
            create_preset(str(source), folder)
        return folder
    return check_model_folder(source)


def load_processor(path: str | Path):
    """The image-only processor of a model folder (tokenizer, image processor, chat template)."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    p = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(p)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(p)
    template = (
        (p / "chat_template.jinja").read_text() if (p / "chat_template.jinja").exists() else None
    )
    if template:
        tokenizer.chat_template = template
    return make_processor(tokenizer, image_processor=image_processor)


def pick_backend(backend: str = "auto") -> str:
    """'unsloth' when asked or when CUDA and unsloth are present (auto); else 'transformers'."""
    import torch

    if backend not in ("auto", "unsloth", "transformers"):
        raise ValueError(f"unknown backend {backend!r}: auto, unsloth or transformers")
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if backend == "unsloth" and not (torch.cuda.is_available() and has_unsloth):
        raise RuntimeError("the unsloth backend needs a CUDA GPU and `pip install -e .[gpu]`")
    if backend == "auto":
        return "unsloth" if torch.cuda.is_available() and has_unsloth else "transformers"
    return backend


def device_settings() -> dict:
    """dtype and attention per device: bf16 + SDPA on CUDA (flash-attention 2 when installed),
    float32 + SDPA on CPU."""
    import torch

    if torch.cuda.is_available():
        attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"dtype": dtype, "attn_implementation": attn, "device": "cuda"}
    return {"dtype": torch.float32, "attn_implementation": "sdpa", "device": "cpu"}


def unsloth_load_kwargs(path: Path, max_seq_length: int = 8192) -> dict:
    """Arguments of FastVisionModel.from_pretrained (checked against unsloth by a drift test)."""
    return {
        "model_name": str(path),
        "max_seq_length": max_seq_length,
        "dtype": None,
        "load_in_4bit": False,
        "use_gradient_checkpointing": "unsloth",
    }


@dataclass
class Loaded:
    model: object
    processor: object
    path: Path
    backend: str
    device: str


def load_model(
    source: str | Path, backend: str = "auto", cache: str | Path = "outputs/models"
) -> Loaded:
    """Load a Qwen2.5-VL from a local folder or a preset name, on the GPU when there is one.

    A LoRA adapter folder (adapter_config.json) loads its base model and applies the adapter.
    """
    if str(source) and (base := adapter_base(source)) is not None:
        from peft import PeftModel

        loaded = load_model(base, backend, cache)
        loaded.model = PeftModel.from_pretrained(loaded.model, str(source))
        loaded.path = Path(source)
        return loaded
    path = resolve_source(source, cache)
    chosen = pick_backend(backend)
    settings = device_settings()
    if chosen == "unsloth":
        from unsloth import FastVisionModel  # imported only here: it patches TRL

        model, _ = FastVisionModel.from_pretrained(**unsloth_load_kwargs(path))
        return Loaded(model, load_processor(path), path, chosen, "cuda")
    from transformers import Qwen2_5_VLForConditionalGeneration

    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=settings["dtype"], attn_implementation=settings["attn_implementation"]
        )
        processor = load_processor(path)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelFolderError(f"{path}: cannot be loaded ({type(err).__name__}: {err})") from err
    model.to(settings["device"])
    return Loaded(model, processor, path, chosen, settings["device"])


def free_memory() -> None:
    """Return what dropped models held: a garbage collection, and the CUDA cache on a GPU (call
    it after ``del`` of the last reference, before loading another model)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def count_parameters(model) -> dict:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
