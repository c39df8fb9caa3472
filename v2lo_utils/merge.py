"""Merging a stage's LoRA adapter into its base model, with a logits parity check.

The merged folder holds safetensors weights and the processor, and loads with plain transformers
(and vLLM on a GPU). Parity: on held-out inputs (frames, prompt and target, teacher-forced), the
merged model reloaded from disk must give the adapter model's logits within ``tolerance``
(largest absolute difference over real tokens). A stage trained in full has no adapter: its model
is re-saved and checked the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .models import adapter_base, load_model, load_processor
from .prompting import load_frames, user_messages


@dataclass
class MergeReport:
    source: str
    base: str | None  # the adapter's base model; None for a full model
    out_dir: str
    merged: bool
    n_inputs: int
    max_abs_logit_diff: float
    tolerance: float
    parity_ok: bool
    source_mb: float
    out_mb: float

    def to_json(self) -> dict:
        return asdict(self)


def folder_mb(path: str | Path) -> float:
    """Size of the files in a folder (MB), checkpoints excluded."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def teacher_forced_batch(processor, rows: list[dict], root: str | Path):
    """Frames + prompt + target of each row as one padded batch."""
    texts, images = [], []
    for r in rows:
        answer = {"role": "assistant", "content": [{"type": "text", "text": r["target"]}]}
        msgs = [*user_messages(r), answer]
        texts.append(processor.apply_chat_template(msgs, tokenize=False))
        images += load_frames(r, root)
    return processor(images=images or None, text=texts, padding=True, return_tensors="pt")


def logits_on(model, batch):
    import torch

    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        out = model(**batch.to(device))
    return out.logits.float().cpu()


def max_logit_diff(a, b, attention_mask) -> float:
    mask = attention_mask.bool().cpu()
    return float((a - b).abs()[mask].max()) if mask.any() else 0.0


def merge_stage(
    source: str | Path,
    out_dir: str | Path,
    rows: list[dict],
    root: str | Path,
    tolerance: float | None = None,
    backend: str = "transformers",
) -> MergeReport:
    """Merge ``source`` (an adapter folder, or a full model) into ``out_dir`` and check parity on
    ``rows``. The tolerance defaults to 1e-4 in float32 and 5e-2 in bf16/fp16."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    src = Path(source)
    base = adapter_base(src)
    loaded = load_model(src, backend)
    batch = teacher_forced_batch(loaded.processor, rows, root)
    reference = logits_on(loaded.model, batch)
    dtype = next(loaded.model.parameters()).dtype
    tol = tolerance if tolerance is not None else (1e-4 if dtype == torch.float32 else 5e-2)
    model = loaded.model.merge_and_unload() if base is not None else loaded.model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    loaded.processor.save_pretrained(out)
    (out / "v2lo_merge.json").write_text(json.dumps({"source": str(src), "base": base}, indent=2))
    del model, loaded
    reloaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, dtype=dtype)
    diff = max_logit_diff(reference, logits_on(reloaded, batch), batch["attention_mask"])
    return MergeReport(
        source=str(src),
        base=base,
        out_dir=str(out),
        merged=base is not None,
        n_inputs=len(rows),
        max_abs_logit_diff=diff,
        tolerance=tol,
        parity_ok=diff <= tol,
        source_mb=folder_mb(src),
        out_mb=folder_mb(out),
    )


def load_merged(path: str | Path):
    """A merged folder with plain transformers and the project's processor: (model, processor)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path), load_processor(path)


def check_vllm_loads(path: str | Path) -> str:
    """On a CUDA machine with vllm installed, load the merged folder with vLLM and generate one
    token; returns what happened ('skipped: ...' elsewhere)."""
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
        return "skipped: needs a CUDA GPU and vllm"
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(path),
        max_model_len=4096,
        gpu_memory_utilization=0.3,
        limit_mm_per_prompt={"image": 16},
    )
    text = llm.generate(
        ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], SamplingParams(max_tokens=1)
    )
    return f"ok: {text[0].outputs[0].text!r}"
