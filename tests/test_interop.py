"""The EasyR1 recipe in configs/ against EasyR1's own loading rules (commit b44b311): its config is
a structured OmegaConf merge that refuses unknown keys, RLHFDataset splits the prompt at each
"<image>" into image parts, resizes every frame into [min_pixels, max_pixels] and drops prompts
over max_prompt_length. EasyR1 installs only beside torch 2.x with vLLM (not here): these rules
are read from its source and checked on this project's export."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from v2lo_utils.dataset import BuildConfig, build_training_set, read_jsonl
from v2lo_utils.exporters import export_rows

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "configs" / "easyr1_grpo.yaml").read_text())

# the dataclass fields of EasyR1's PPOConfig at b44b311 that the config sets (verl/trainer/config.py,
# verl/workers/actor/config.py, verl/workers/rollout/config.py, verl/workers/reward/config.py)
EASYR1_KEYS = {
    "data": {
        "train_files", "val_files", "prompt_key", "answer_key", "image_key", "video_key",
        "image_dir", "video_fps", "max_prompt_length", "max_response_length",
        "rollout_batch_size", "mini_rollout_batch_size", "val_batch_size", "format_prompt",
        "override_chat_template", "shuffle", "seed", "min_pixels", "max_pixels",
        "filter_overlong_prompts", "filter_overlong_prompts_workers",
    },
    "algorithm": {
        "gamma", "lam", "adv_estimator", "disable_kl", "use_kl_loss", "kl_penalty", "kl_coef",
        "kl_type", "kl_horizon", "kl_target", "online_filtering", "filter_key", "filter_low",
        "filter_high",
    },
    "worker.actor": {
        "strategy", "global_batch_size", "micro_batch_size_per_device_for_update",
        "micro_batch_size_per_device_for_experience", "max_grad_norm", "clip_ratio_low",
        "clip_ratio_high", "clip_ratio_dual", "loss_avg_mode", "loss_type", "ppo_epochs",
        "padding_free", "dynamic_batching", "ulysses_size", "use_torch_compile", "model",
        "optim", "fsdp", "offload",
    },
    "worker.actor.model": {
        "model_path", "tokenizer_path", "override_config", "enable_gradient_checkpointing",
        "trust_remote_code", "freeze_vision_tower", "lora",
    },
    "worker.actor.optim": {
        "lr", "betas", "weight_decay", "strategy", "lr_warmup_ratio", "lr_warmup_steps",
        "min_lr_ratio", "lr_scheduler_type",
    },
    "worker.rollout": {
        "name", "n", "temperature", "top_p", "top_k", "seed", "limit_images", "dtype",
        "gpu_memory_utilization", "ignore_eos", "enforce_eager", "enable_chunked_prefill",
        "tensor_parallel_size", "max_model_len", "max_num_batched_tokens", "disable_log_stats",
        "disable_tqdm", "val_override_config",
    },
    "worker.reward": {"reward_function", "reward_function_kwargs", "skip_special_tokens", "num_cpus"},
    "trainer": {
        "total_epochs", "max_steps", "project_name", "experiment_name", "logger", "nnodes",
        "n_gpus_per_node", "max_try_make_batch", "critic_warmup", "val_freq", "val_before_train",
        "val_only", "val_generations_to_log", "save_freq", "save_limit", "save_model_only",
        "save_checkpoint_path", "load_checkpoint_path", "ray_timeline", "find_last_checkpoint",
    },
}  # fmt: skip


def test_the_easyr1_config_sets_only_keys_easyr1_has():
    assert set(CONFIG) <= {"data", "algorithm", "worker", "trainer"}
    assert set(CONFIG["worker"]) <= {"hybrid_engine", "actor", "critic", "ref", "reward", "rollout"}
    for section, allowed in EASYR1_KEYS.items():
        value = CONFIG
        for key in section.split("."):
            value = value[key]
        assert set(value) <= allowed, (section, set(value) - allowed)
    assert "reward_type" not in CONFIG["worker"]["reward"]  # gone from EasyR1: ConfigKeyError
    assert CONFIG["data"]["format_prompt"] is None  # no math prompt asking for a boxed answer


def qwen_vision_tokens(h: int, w: int, min_pixels: int, max_pixels: int) -> int:
    """Qwen2.5-VL's smart_resize (28 px per merged token), as EasyR1's process_image feeds it."""
    hb, wb = max(28, round(h / 28) * 28), max(28, round(w / 28) * 28)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / 28) * 28, math.floor(w / beta / 28) * 28
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / 28) * 28, math.ceil(w * beta / 28) * 28
    return (hb // 28) * (wb // 28)


@pytest.mark.parametrize("image_size", [112, 224])
def test_sixteen_frame_prompts_fit_easyr1s_prompt_length(tmp_path, image_size):
    build_training_set(tmp_path, BuildConfig(scenes=2, seed=4, image_size=image_size, workers=1))
    rows = export_rows(read_jsonl(tmp_path / "train.jsonl"), "easyr1", tmp_path)
    data = CONFIG["data"]
    longest = max(rows, key=lambda r: (len(r["image_path"]), len(r["question"])))
    assert len(longest["image_path"]) == 16
    for r in rows:  # RLHFDataset: one image part per "<image>", in order
        assert r["question"].count("<image>") == len(r["image_path"])
    vision = 16 * qwen_vision_tokens(image_size, image_size, data["min_pixels"], data["max_pixels"])
    text = len(longest["question"].replace("<image>", "")) / 3 + 40  # generous: ~4 chars a token
    assert vision + text <= data["max_prompt_length"], (vision, text)
    # EasyR1's defaults would upscale every frame to 512 x 512 and drop the row
    assert (
        16 * qwen_vision_tokens(image_size, image_size, 262144, 4194304) > data["max_prompt_length"]
    )


@pytest.mark.parametrize("fmt", ["trl-grpo", "trl-prompt-completion"])
def test_trl_exports_load_with_datasets_and_decode_frames(tmp_path, fmt):
    """TRL reads a JSONL export with ``datasets``; cast as documented, the frames are images
    (TRL's vLLM path cannot take path strings); prompt/completion rows train on the completion."""
    from datasets import Image, List, load_dataset
    from PIL.Image import Image as PILImage

    from v2lo_utils.dataset import write_jsonl

    build_training_set(tmp_path / "d", BuildConfig(scenes=2, seed=4, image_size=56, workers=1))
    rows = export_rows(read_jsonl(tmp_path / "d" / "train.jsonl"), fmt, tmp_path / "d")
    write_jsonl(tmp_path / "x.jsonl", rows)
    ds = load_dataset("json", data_files=str(tmp_path / "x.jsonl"), split="train")
    ds = ds.cast_column("images", List(Image(mode="RGB")))
    first = ds[0]
    assert all(isinstance(im, PILImage) and im.size == (56, 56) for im in first["images"])
    n_parts = sum(p["type"] == "image" for p in first["prompt"][0]["content"])
    assert n_parts == len(first["images"])
    if fmt == "trl-prompt-completion":
        assert first["completion"][0]["role"] == "assistant"


# ms-swift 4.6.0's own SftArguments fields the script sets (swift/arguments: tuner_args.py,
# base_args/{base_args,model_args,data_args,template_args}.py, sft_args.py; warmup_ratio from
# swift/trainers/arguments.py, which keeps it after transformers 5.12 deprecated it); the rest
# come from transformers' Seq2SeqTrainingArguments, checked against the installed transformers
MS_SWIFT_KEYS = {
    "model", "dataset", "output_dir", "tuner_type", "lora_rank", "lora_alpha", "target_modules",
    "freeze_vit", "freeze_aligner", "torch_dtype", "learning_rate", "max_length",
    "split_dataset_ratio", "warmup_ratio",
}  # fmt: skip


def test_the_ms_swift_script_passes_only_arguments_swift_has():
    import dataclasses
    import re

    from transformers import Seq2SeqTrainingArguments

    script = (ROOT / "configs" / "ms_swift_sft.sh").read_text()
    flags = set(re.findall(r"^\s+--(\w+)", script, re.M))
    trainer = {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)}
    assert flags - MS_SWIFT_KEYS <= trainer, flags - MS_SWIFT_KEYS - trainer
    assert "train_type" not in flags  # ms-swift 4 renamed it tuner_type
    values = dict(re.findall(r"^\s+--(\w+) (\S+)", script, re.M))
    assert (values["lora_rank"], values["lora_alpha"], values["learning_rate"]) == (
        "64",
        "128",
        "1e-4",
    )
