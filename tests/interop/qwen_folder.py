"""A Qwen2.5-VL tokenizer + processor folder built offline, for the clients' own loaders in
`make interop` (ms-swift's template hard-codes Qwen's image token id; EasyR1 loads a model folder
with AutoTokenizer/AutoProcessor). Nothing here downloads Qwen's tokenizer: a byte-level BPE is
trained on the export's own texts with Qwen2's text pipeline (NFC, Qwen2's pre-tokenizer regex,
byte level), its vocabulary padded with unused entries so that the special tokens sit at
Qwen2.5-VL's ids, and saved with the stock Qwen2VLImageProcessor settings of Qwen2.5-VL, the
stock Qwen2_5_VLProcessor and a Qwen2.5-VL config.json (no weights). Runs in the interop venv."""

from __future__ import annotations

import json
from pathlib import Path

# Qwen2.5-VL's ids (transformers' Qwen2_5_VLConfig defaults: image 151655, video 151656, vision
# start 151652, vision end 151653; TRL's SFT docstring on Qwen2.5-VL: im_start 151644, im_end
# 151645; ms-swift's Qwen loaders: endoftext 151643 as pad; vision_pad the one id between)
QWEN_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
FIRST_SPECIAL = min(QWEN_SPECIAL_IDS.values())  # 151643 ordinary tokens before them
IMAGE_PAD = QWEN_SPECIAL_IDS["<|image_pad|>"]
VISION_START = QWEN_SPECIAL_IDS["<|vision_start|>"]
VISION_END = QWEN_SPECIAL_IDS["<|vision_end|>"]
BPE_VOCAB = 1024  # trained tokens (256 bytes and merges); the rest up to 151643 are unused
# the stock Qwen2.5-VL image processor settings (its preprocessor_config.json)
IMAGE_PROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
                   "temporal_patch_size": 2, "merge_size": 2}  # fmt: skip


def vision_blocks(ids: list[int]) -> list[tuple[int, bool]]:
    """Each <|vision_start|>: the run of image pads after it and whether <|vision_end|> closes it."""
    blocks = []
    for s in (k for k, t in enumerate(ids) if t == VISION_START):
        e = s + 1
        while e < len(ids) and ids[e] == IMAGE_PAD:
            e += 1
        blocks.append((e - s - 1, e < len(ids) and ids[e] == VISION_END))
    return blocks


def export_texts(rows: list[dict]) -> list[str]:
    """The texts of exported rows (ms-swift messages or EasyR1 questions), image tags removed."""
    texts = []
    for row in rows:
        for m in row.get("messages", []):
            texts.append(m["content"].replace("<image>", ""))
        if "question" in row:
            texts.append(row["question"].replace("<image>", ""))
    return texts


def _tokenizer(texts: list[str]):
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2TokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    if len(vocab) > FIRST_SPECIAL or sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"trained vocabulary of {len(vocab)} is not 0..n-1 below {FIRST_SPECIAL}")
    # unused entries (never produced: no merge makes them) up to the special tokens' ids
    for i in range(len(vocab), max(QWEN_SPECIAL_IDS.values()) + 1):
        vocab[f"<|v2lo_unused_{i}|>"] = i
    for token, i in QWEN_SPECIAL_IDS.items():
        del vocab[f"<|v2lo_unused_{i}|>"]
        vocab[token] = i
    tok = Tokenizer.from_str(json.dumps(spec))
    # already in the vocabulary: added as special tokens they keep those ids
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_IDS]
    )
    return Qwen2TokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in QWEN_SPECIAL_IDS if t != "<|endoftext|>"],
        errors="replace",
        model_max_length=32768,
    )


def build_qwen_folder(folder: str | Path, texts: list[str], chat_template: str) -> Path:
    """Write the folder (tokenizer, image/video processor, processor, config.json) and check
    that the special tokens load at Qwen2.5-VL's ids; return it."""
    from transformers import (
        AutoProcessor,
        Qwen2_5_VLConfig,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    folder = Path(folder)
    tokenizer = _tokenizer(texts)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**IMAGE_PROCESSOR),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=chat_template,
    )
    processor.save_pretrained(folder)
    config = Qwen2_5_VLConfig()  # the 7B's published shape and Qwen's token ids
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    config.save_pretrained(folder)
    loaded = AutoProcessor.from_pretrained(folder)
    got = {t: loaded.tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_IDS}
    if got != QWEN_SPECIAL_IDS or type(loaded).__name__ != "Qwen2_5_VLProcessor":
        raise RuntimeError(f"{folder}: loads as {type(loaded).__name__} with ids {got}")
    return folder


def ensure_qwen_folder(folder: str | Path, rows: list[dict], chat_template_path: str | Path):
    """The folder, built from ``rows``' texts when it does not exist yet."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        build_qwen_folder(folder, export_texts(rows), Path(chat_template_path).read_text())
    return folder
