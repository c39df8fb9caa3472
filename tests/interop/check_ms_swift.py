"""Run by `make interop` in its own venv (ms-swift 4.6.0 pins trl<1.0, peft<0.21, datasets<4.8.5, so
it cannot live beside the project's set): ms-swift's own code on the project's ms-swift export.

1. `swift.dataset.load_dataset` reads the export, and every row it yields must equal the exported
   one (roles, texts, one <image> tag per frame, the frame paths).
2. ms-swift's Qwen2.5-VL template (`get_processor` on a Qwen2.5-VL folder, `get_template` for the
   qwen2_5_vl template type, train mode, max length 8192 as configs/ms_swift_sft.sh) encodes
   every loaded row. The folder is built here from the export's texts (qwen_folder.py: Qwen's
   special tokens at Qwen2.5-VL's ids, which the template hard-codes). Per row: one
   <|vision_start|> <|image_pad|> x (grid_h * grid_w / 4) <|vision_end|> block per frame, in order,
   from the encoded image_grid_thw; the pixel rows match the grids; the labels (non -100) decode
   to the exported assistant text and the template's end token; the user turn decodes to the
   exported user text with each <image> tag replaced by its frame's block (a tag left over, or
   a frame without a tag, is a mismatch).

Usage: python check_ms_swift.py EXPORT.jsonl --qwen-dir DIR --chat-template FILE
Prints one line per check; exits 1 on any mismatch."""

from __future__ import annotations

import argparse
import json
import os
import warnings
from importlib.metadata import version
from pathlib import Path

from qwen_folder import (  # imports nothing heavy at load
    IMAGE_PAD,
    VISION_END,
    ensure_qwen_folder,
    vision_blocks,
)

os.environ.setdefault("LOG_LEVEL", "ERROR")  # ms-swift's logger: many INFO and WARNING lines
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated")

MAX_LENGTH = 8192  # configs/ms_swift_sft.sh --max_length


def check_load_dataset(path: str, exported: list[dict]) -> tuple[list[dict], list[str]]:
    from swift.dataset import load_dataset

    loaded, _ = load_dataset([path], split_dataset_ratio=0.0, num_proc=1, shuffle=False)
    mismatches = []
    if len(loaded) != len(exported):
        mismatches.append(f"{len(loaded)} rows loaded, {len(exported)} exported")
    for i, (got, want) in enumerate(zip(loaded, exported, strict=False), start=1):
        roles = [m["role"] for m in got["messages"]]
        texts = [m["content"] for m in got["messages"]]
        paths = [im["path"] if isinstance(im, dict) else im for im in got["images"]]
        if roles != [m["role"] for m in want["messages"]]:
            mismatches.append(f"row {i}: roles {roles}")
        if texts != [m["content"] for m in want["messages"]]:
            mismatches.append(f"row {i}: message texts differ")
        if paths != want["images"] or texts[0].count("<image>") != len(paths):
            mismatches.append(f"row {i}: {len(paths)} images for {texts[0].count('<image>')} tags")
    return list(loaded), mismatches


def check_row(template, tokenizer, row: dict, want: dict) -> tuple[list[str], int, int]:
    """The mismatches of one encoded row against the exported one, its length and image pads."""
    user, target = (m["content"] for m in want["messages"])
    n = len(want["images"])
    try:
        enc = template.encode(row)
    except Exception as err:  # any failure of the client's encode is the finding
        return [f"encode failed: {type(err).__name__}: {err}"], 0, 0
    out = []
    ids, labels = enc["input_ids"], enc["labels"]
    grid = enc.get("image_grid_thw")
    grid = [] if grid is None else grid.tolist()
    if len(grid) != n or any(t != 1 for t, _, _ in grid):
        out.append(f"image_grid_thw {grid} for {n} frames")
    want_blocks = [(h * w // 4, True) for _, h, w in grid]
    got_blocks = vision_blocks(ids)
    if got_blocks != want_blocks:
        out.append(f"vision blocks (pads, closed) {got_blocks} != {want_blocks} from the grids")
    pads = ids.count(IMAGE_PAD)
    if pads != sum(h * w // 4 for _, h, w in grid):
        out.append(f"{pads} image pad tokens, grids give {sum(h * w // 4 for _, h, w in grid)}")
    if ids.count(VISION_END) != n:
        out.append(f"{ids.count(VISION_END)} <|vision_end|> for {n} frames")
    pixels = enc.get("pixel_values")
    if pixels is None or pixels.shape[0] != sum(t * h * w for t, h, w in grid):
        out.append(f"pixel_values {None if pixels is None else tuple(pixels.shape)}")
    end = "".join(w for w in template.template_meta.suffix if isinstance(w, str))
    trained = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
    if trained != target + end:
        out.append(f"labels decode to {trained[:80]!r}..., not the target + {end!r}")
    if user.count("<image>") != n:
        out.append(f"{user.count('<image>')} <image> tags for {n} frames")
    turn = user  # the user turn as the model must see it: each tag expanded to its frame's block
    for _, h, w in grid:
        block = "<|vision_start|>" + "<|image_pad|>" * (h * w // 4) + "<|vision_end|>"
        turn = turn.replace("<image>", block, 1)
    if f"<|im_start|>user\n{turn}<|im_end|>" not in tokenizer.decode(ids):
        out.append("the user turn is not the exported text with one vision block per tag")
    return out, len(ids), pads


def check_template_encode(loaded, exported, qwen_dir) -> tuple[list[str], dict]:
    from swift import get_processor, get_template

    processor = get_processor(str(Path(qwen_dir).resolve()))  # ms-swift's loader, no model
    template = get_template(
        processor, template_type="qwen2_5_vl", max_length=MAX_LENGTH, truncation_strategy="raise"
    )
    template.set_mode("train")  # as `swift sft` does: labels on the assistant turn
    tokenizer = processor.tokenizer
    mismatches = []
    if template.image_token_id != tokenizer.convert_tokens_to_ids("<|image_pad|>"):
        mismatches.append(f"template image token {template.image_token_id} is not the folder's")
    stats = {"frames": 0, "pads": 0, "longest": 0}
    for i, (row, want) in enumerate(zip(loaded, exported, strict=False), start=1):
        found, length, pads = check_row(template, tokenizer, row, want)
        mismatches += [f"row {i}: {m}" for m in found]
        stats["frames"] += len(want["images"])
        stats["pads"] += pads
        stats["longest"] = max(stats["longest"], length)
    return mismatches, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export")
    ap.add_argument("--qwen-dir", default="outputs/interop/qwen2_5_vl")
    ap.add_argument("--chat-template", default="outputs/interop/qwen2_5_vl.jinja")
    args = ap.parse_args(argv)
    with open(args.export, encoding="utf-8") as fh:
        exported = [json.loads(line) for line in fh if line.strip()]
    swift = f"ms-swift {version('ms-swift')}"

    loaded, mismatches = check_load_dataset(args.export, exported)
    print(f"{swift} load_dataset: {len(loaded)} rows, {len(mismatches)} mismatches")
    for m in mismatches[:10]:
        print("  " + m)

    folder = ensure_qwen_folder(args.qwen_dir, exported, args.chat_template)
    encode_mismatches, stats = check_template_encode(loaded, exported, folder)
    print(
        f"{swift} template qwen2_5_vl encode (transformers {version('transformers')}, "
        f"torchvision {version('torchvision')}): {len(loaded)} rows, {stats['frames']} frames, "
        f"{stats['pads']} image pad tokens, longest {stats['longest']} of {MAX_LENGTH} tokens, "
        f"{len(encode_mismatches)} mismatches"
    )
    for m in encode_mismatches[:10]:
        print("  " + m)
    return 1 if mismatches or encode_mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
