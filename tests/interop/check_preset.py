"""Run by `make interop` in the interop venv (transformers 4.x, torchvision present): a project
preset folder read by the standard Auto classes, as a user of another framework would.

write_preset_ids.py (project venv) built the `tiny` preset and wrote texts with the ids the
project's own tokenizer gives them, and the project processor's encoding of one frame. Here:
`AutoTokenizer.from_pretrained(folder)` must give the same ids for every text, and
`AutoProcessor.from_pretrained(folder)` must be transformers' stock Qwen2_5_VLProcessor whose
tokenizer gives the same ids and which encodes the frame as the project's processor does (ids,
image_grid_thw, pixel values within 1e-4). Every difference is printed: which class loaded,
which texts differ and where.

Usage: python check_preset.py preset_ids.json
Prints one line per Auto class; exits 1 on any difference."""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path


def first_difference(tokenizer, want: list[int], got: list[int]) -> str:
    k = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), None)
    k = min(len(want), len(got)) if k is None else k
    show = lambda ids: tokenizer.convert_ids_to_tokens(ids[k : k + 4])  # noqa: E731
    return (
        f"{len(got)} ids for the project's {len(want)}, first differing at {k}: "
        f"{got[k : k + 4]} {show(got)} for {want[k : k + 4]}"
    )


def text_differences(tokenizer, texts: list[dict]) -> list[str]:
    out = []
    for n, item in enumerate(texts, start=1):
        got = tokenizer.encode(item["text"])
        if got != item["ids"]:
            head = item["text"][:40].replace("\n", "\\n")
            out.append(f"text {n} {head!r}: {first_difference(tokenizer, item['ids'], got)}")
    return out


def frame_differences(processor, frame: dict) -> list[str]:
    import torch
    from PIL import Image

    enc = processor(
        images=[Image.open(frame["path"]).convert("RGB")], text=[frame["text"]], return_tensors="pt"
    )
    out = []
    if enc["image_grid_thw"].tolist() != frame["image_grid_thw"]:
        grid = enc["image_grid_thw"].tolist()
        out.append(f"frame: image_grid_thw {grid}, the project's {frame['image_grid_thw']}")
    elif (ids := enc["input_ids"][0].tolist()) != frame["ids"]:
        out.append(f"frame: ids {first_difference(processor.tokenizer, frame['ids'], ids)}")
    else:
        diff = (enc["pixel_values"] - torch.tensor(frame["pixel_values"])).abs().max().item()
        if diff > 1e-4:
            out.append(f"frame: pixel values differ by up to {diff:.3g}")
    return out


def main(path: str) -> int:
    from transformers import AutoProcessor, AutoTokenizer
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    record = json.loads(Path(path).read_text())
    folder, texts = record["folder"], record["texts"]
    where = f"{folder} with transformers {version('transformers')}"
    project = f"project: {record['tokenizer_class']}"
    failed = False

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as err:  # the loader's failure is the finding
        print(f"{where}: AutoTokenizer fails ({project}): {type(err).__name__}: {err}")
        tokenizer, failed = None, True
    if tokenizer is not None:
        diffs = text_differences(tokenizer, texts)
        print(
            f"{where}: AutoTokenizer -> {type(tokenizer).__name__} ({project}): "
            f"{len(texts)} texts, {len(diffs)} differ"
        )
        for d in diffs[:10]:
            print("  " + d)
        failed |= bool(diffs)

    try:
        processor = AutoProcessor.from_pretrained(folder)
    except Exception as err:
        print(f"{where}: AutoProcessor fails: {type(err).__name__}: {err}")
        return 1
    name = f"{type(processor).__module__}.{type(processor).__name__}"
    diffs = []
    if type(processor) is not Qwen2_5_VLProcessor:
        diffs.append(f"loaded {name}, not transformers' Qwen2_5_VLProcessor")
    inner = getattr(processor, "tokenizer", None)
    if inner is None:
        diffs.append("it has no tokenizer")
    else:
        diffs += [f"its tokenizer: {d}" for d in text_differences(inner, texts)]
        if "frame" in record:
            diffs += frame_differences(processor, record["frame"])
    image = type(getattr(processor, "image_processor", None)).__name__
    frame = record.get("frame", {}).get("image_grid_thw")
    print(
        f"{where}: AutoProcessor -> {type(processor).__name__} (image processor {image}; "
        f"project: {record['processor_class']}), frame grid {frame}: {len(diffs)} differences"
    )
    for d in diffs[:10]:
        print("  " + d)
    return 1 if failed or diffs else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
