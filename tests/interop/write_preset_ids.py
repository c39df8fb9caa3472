"""Project side of `make interop`, run with the project's venv: builds the `tiny` preset into
OUT/preset_tiny, loads it with v2lo_utils.models.load_model, and writes OUT/preset_ids.json: a set
of texts with the ids the project's own tokenizer gives them, and what the project's processor
makes of one frame (ids, image_grid_thw, pixel values), for check_preset.py to compare with the
standard Auto classes of the interop venv's transformers. Also writes OUT/qwen2_5_vl.jinja, TRL's
Qwen2.5-VL chat template (from TRL's wheel, as the presets take it), for the Qwen2.5-VL folder of
the client checks.

Usage: python write_preset_ids.py OUT [EXPORT.jsonl]  (an ms-swift export: its texts and a frame)
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import sys
from pathlib import Path

from v2lo_utils.presets import create_preset

EDGE_TEXTS = [
    "",
    " ",
    "  two leading spaces, trailing  ",
    "tabs\tand\nnewlines\r\nand\n\n\nblank lines",
    "unicode: café, naïve, 東京, emoji 😀, combining e\u0301",
    "numbers 12345 -3.7 0.0 8.0 -8.0 7.95 1e-3",
    '<map>Establish a bird\'s-eye view : [{"object_name": "sofa", "bbox": [-1.2, 0.4, 0.6, 1.3]}]</map>',
    "<think>diningtable spans x [0.6, 2.1]</think><answer>B</answer>",
    "\u2018typographic\u2019 \u201cquotes\u201d",
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Where is the bed?<|im_end|>\n",
    "<|endoftext|><|video_pad|><|vision_pad|>",
    "diningtable fridge sofa bed armchair television",
]


def main(out: str, export: str | None = None) -> int:
    from PIL import Image

    from v2lo_utils.models import load_model

    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    template = importlib.resources.files("trl").joinpath("chat_templates/qwen2_5_vl.jinja")
    (out_p / "qwen2_5_vl.jinja").write_text(template.read_text())
    folder = out_p / "preset_tiny"
    shutil.rmtree(folder, ignore_errors=True)
    create_preset("tiny", folder)
    processor = load_model(folder, backend="transformers").processor
    tokenizer = processor.tokenizer

    texts = list(EDGE_TEXTS)
    frame = None
    if export:
        rows = [json.loads(x) for x in Path(export).read_text().splitlines() if x.strip()]
        for row in rows[:3]:
            texts += [m["content"] for m in row["messages"]]
        frame = rows[0]["images"][0]
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}
        ]
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
    record = {
        "folder": str(folder),
        "tokenizer_class": type(tokenizer).__name__,
        "processor_class": type(processor).__name__,
        "texts": [{"text": t, "ids": tokenizer.encode(t)} for t in texts],
    }
    if frame:
        prompt = "<|vision_start|><|image_pad|><|vision_end|>Where is the bed?"
        enc = processor(
            images=[Image.open(frame).convert("RGB")], text=[prompt], return_tensors="pt"
        )
        record["frame"] = {
            "path": frame,
            "text": prompt,
            "ids": enc["input_ids"][0].tolist(),
            "image_grid_thw": enc["image_grid_thw"].tolist(),
            "pixel_values": enc["pixel_values"].tolist(),
        }
    (out_p / "preset_ids.json").write_text(json.dumps(record, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
