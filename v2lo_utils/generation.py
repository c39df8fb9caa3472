"""Batched greedy generation from frames and prompts (transformers on CPU or GPU).

A row is a dataset row (frames relative to ``root``, ``prompt``); the user turn is the frames as
image parts followed by the prompt, rendered with the processor's chat template.

Greedy decoding of a tokenizer with one token per map coordinate (the presets) can decode each
coordinate at the mean of the model's distribution over coordinate values instead of its mode
(``coordinates="mean"``): the point estimate with the least expected squared error, where an
uncertain model's mode is one arbitrary value of a broad distribution.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .prompting import load_frames, user_messages


@contextmanager
def grouped_query_sdpa() -> Iterator[None]:
    """transformers' SDPA attention, for grouped-query heads (the presets' 4 query heads on 2
    key/value heads; the 7B's 28 on 4) with a padding mask, copies each layer's keys and values
    once per query head (``repeat_kv``): in batched decoding, the whole KV cache at every step.
    torch's CPU kernel takes the grouped heads and the mask directly (``enable_gqa``), with the
    same output; inside this context transformers uses it for CPU tensors (greedy batches of 48
    here: 12.7 rows/s against 9.5, ``bench/bench_generate.py``). CUDA: as transformers decides."""
    from transformers.integrations import sdpa_attention

    original = sdpa_attention.use_gqa_in_sdpa

    def use_gqa(attention_mask, key, value) -> bool:
        if key.device.type == "cpu":
            return key.shape[-1] == value.shape[-1]
        return original(attention_mask, key, value)

    sdpa_attention.use_gqa_in_sdpa = use_gqa
    try:
        yield
    finally:
        sdpa_attention.use_gqa_in_sdpa = original


def coordinate_token_values(tokenizer) -> dict[int, float]:
    """Token id -> value (m) of the tokenizer's single-token coordinates; empty unless every
    coordinate -8.0 ... 8.0 is one token (real Qwen tokenizers spell numbers digit by digit)."""
    from .presets import COORD_TOKENS

    vocab = tokenizer.get_vocab()
    if not all(c in vocab for c in COORD_TOKENS):
        return {}
    return {vocab[c]: float(c) for c in COORD_TOKENS}


def coordinate_tensors(tokenizer):
    """:func:`coordinate_token_values` as two tensors: the coordinate tokens' ids and their
    values (m); None when the tokenizer has no coordinate tokens."""
    import torch

    values = coordinate_token_values(tokenizer)
    if not values:
        return None
    return torch.tensor(list(values)), torch.tensor(list(values.values()))


def coordinate_mean_processor(tokenizer):
    """A logits processor for greedy decoding: where the most likely next token is a coordinate,
    force the coordinate token nearest to the mean value (m) of the distribution over coordinate
    tokens. None when the tokenizer has no coordinate tokens."""
    import torch
    from transformers import LogitsProcessor

    if (coordinates := coordinate_tensors(tokenizer)) is None:
        return None
    ids, vals = coordinates

    class CoordinateMean(LogitsProcessor):
        def __call__(self, input_ids, scores):
            cids, cvals = ids.to(scores.device), vals.to(scores.device)
            rows = torch.isin(scores.argmax(dim=-1), cids)
            if rows.any():
                probs = torch.softmax(scores[rows][:, cids].float(), dim=-1)
                mean = probs @ cvals
                pick = cids[(mean[:, None] - cvals).abs().argmin(dim=-1)]
                forced = torch.full_like(scores[rows], float("-inf"))
                forced[torch.arange(len(pick), device=scores.device), pick] = 0.0
                scores[rows] = forced
            return scores

    return CoordinateMean()


def decode_step_clock(chooser):
    """A logits processor that times each decode step (the time between its calls) for a
    :class:`~v2lo_utils.threads.ThreadChooser` and runs the next step on the count it picks;
    call ``start()`` before each ``generate`` (the first call of a generation follows the
    prefill, which is not a decode step)."""
    import time

    from transformers import LogitsProcessor

    from .threads import next_threads

    class DecodeStepClock(LogitsProcessor):
        def __init__(self) -> None:
            self.last: float | None = None

        def start(self) -> None:
            self.last = None
            next_threads(chooser)

        def __call__(self, input_ids, scores):
            if self.last is not None:
                chooser.record(time.perf_counter() - self.last)
            next_threads(chooser)
            self.last = time.perf_counter()
            return scores

    return DecodeStepClock()


def _batches(rows: Sequence[dict], size: int) -> Iterator[Sequence[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def generate_completions(
    model,
    processor,
    rows: Sequence[dict],
    root: str | Path,
    max_new_tokens: int = 512,
    batch_size: int = 4,
    progress: bool = True,
    temperature: float = 0.0,
    samples: int = 1,
    seed: int = 0,
    coordinates: str = "mean",
) -> list[str]:
    """Completions for ``rows``, in order: greedy (deterministic) by default; with a temperature,
    ``samples`` sampled completions per row, row after row (seeded). ``coordinates``: "mean" or
    "mode", how greedy decoding picks a single-token coordinate (see the module docstring)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    from .presets import vision_token_ids
    from .threads import restore_threads, thread_chooser

    if coordinates not in ("mean", "mode"):
        raise ValueError(f"coordinates must be 'mean' or 'mode', not {coordinates!r}")

    device = next(model.parameters()).device
    tok = processor.tokenizer
    # CPU threads chosen while decoding, from the decode steps' times (see threads.py)
    chooser = thread_chooser(device)
    clock = decode_step_clock(chooser) if chooser is not None else None
    processors = [clock] if clock is not None else []
    greedy: dict = {"do_sample": False}
    if coordinates == "mean" and (proc := coordinate_mean_processor(tok)) is not None:
        processors.append(proc)
    greedy["logits_processor"] = LogitsProcessorList(processors)
    was_training = model.training
    model.eval()
    out: list[str] = []
    bar = tqdm(total=len(rows), desc="generate", unit="row", disable=not progress)
    try:
        for batch in _batches(rows, batch_size):
            texts = [
                processor.apply_chat_template(
                    user_messages(r), tokenize=False, add_generation_prompt=True
                )
                for r in batch
            ]
            images = [im for r in batch for im in load_frames(r, root)]
            inputs = processor(
                images=images or None,
                text=texts,
                padding=True,
                padding_side="left",
                return_tensors="pt",
            ).to(device)
            sampling = greedy
            if temperature > 0:
                torch.manual_seed(seed + len(out))
                sampling = {
                    "do_sample": True,
                    "temperature": temperature,
                    "num_return_sequences": samples,
                    "logits_processor": LogitsProcessorList([clock] if clock else []),
                }
            if clock is not None:
                clock.start()
            with torch.no_grad(), grouped_query_sdpa():
                ids = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                    suppress_tokens=vision_token_ids(tok),
                    **sampling,
                )
            new = ids[:, inputs["input_ids"].shape[1] :]
            out += tok.batch_decode(new, skip_special_tokens=True)
            if chooser is not None:
                bar.set_postfix(threads=chooser.current(), refresh=False)
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
        restore_threads(chooser)
    return out


def vllm_engine(path: str | Path, max_model_len: int = 16384, gpu_memory_utilization: float = 0.5):
    """A vLLM engine on a full (merged) model folder: CUDA and vllm only (``.[gpu]``)."""
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
        raise RuntimeError("the vllm engine needs a CUDA GPU and vllm: pip install -e .[gpu]")
    from vllm import LLM

    return LLM(
        model=str(path),
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        limit_mm_per_prompt={"image": 16},
    )


def generate_vllm(
    llm, processor, rows: Sequence[dict], root: str | Path, max_new_tokens: int = 512
) -> list[str]:
    """Greedy completions for ``rows`` from a :func:`vllm_engine`, in order; the prompt is the
    processor's chat template, as in :func:`generate_completions`."""
    from vllm import SamplingParams

    prompts = [
        {
            "prompt": processor.apply_chat_template(
                user_messages(r), tokenize=False, add_generation_prompt=True
            ),
            "multi_modal_data": {"image": load_frames(r, root)},
        }
        for r in rows
    ]
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    return [o.outputs[0].text for o in llm.generate(prompts, params, use_tqdm=False)]
