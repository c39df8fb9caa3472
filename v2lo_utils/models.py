"""Loading Qwen2.5-VL models: a preset by name (built once by :mod:`~v2lo_utils.presets`) or a
local checkpoint folder (the 7B included), with two backends.

:func:`load_model` uses Unsloth's FastVisionModel when CUDA and unsloth are present, else
transformers (+ PEFT for a LoRA adapter folder). Folders are checked first
(:func:`check_model_folder`: config, tokenizer, readable safetensors) and fingerprinted
(:func:`model_fingerprint`) so that predictions record which weights made them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFolderError
from .presets import (
    PRESET_VERSION,
    PRESETS,
    create_preset,
    make_processor,
    preset_budget,
    preset_version,
)


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


def resolve_source(
    source: str | Path, cache: str | Path = "outputs/models", preset_seconds: float | None = None
) -> Path:
    """A preset name ('tiny', 'small') becomes its folder under ``cache`` (built once); anything
    else must be a local model folder. ``preset_seconds``: the wall-clock budget of a preset's
    perception stages (0: none); a cached preset built under another budget is rebuilt. None:
    any cached build of this recipe version (a fresh build has no budget)."""
    if str(source) in PRESETS:
        folder = Path(cache) / str(source)
        stale = preset_version(folder) != PRESET_VERSION
        if stale or (preset_seconds is not None and preset_budget(folder) != preset_seconds):
            shutil.rmtree(folder, ignore_errors=True)
            create_preset(str(source), folder, max_seconds=preset_seconds or 0.0)
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
    source: str | Path,
    backend: str = "auto",
    cache: str | Path = "outputs/models",
    preset_seconds: float | None = None,
) -> Loaded:
    """Load a Qwen2.5-VL from a local folder or a preset name, on the GPU when there is one
    (``preset_seconds``: a preset's build budget, :func:`resolve_source`).

    A LoRA adapter folder (adapter_config.json) loads its base model and applies the adapter.
    """
    if str(source) and (base := adapter_base(source)) is not None:
        from peft import PeftModel

        loaded = load_model(base, backend, cache)
        loaded.model = PeftModel.from_pretrained(loaded.model, str(source))
        loaded.path = Path(source)
        return loaded
    path = resolve_source(source, cache, preset_seconds)
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
