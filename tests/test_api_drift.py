"""API drift: every call the training code makes into TRL, PEFT, transformers and Unsloth must
match the pinned libraries' signatures. The Unsloth branch cannot run without a GPU, so its
signatures are read from the pinned wheel's source (downloaded by `make venv`) without importing it."""

import ast
import dataclasses
import inspect
import re
import sys
import zipfile
from pathlib import Path

import peft
import pytest
import trl
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from v2lo_utils.models import unsloth_load_kwargs
from v2lo_utils.presets import create_preset
from v2lo_utils.sft import SFTParams, sft_config_kwargs, unsloth_peft_kwargs
from v2lo_utils.training import LM_LINEAR_REGEX, lora_kwargs

P = SFTParams(data_dir="d", output_dir="o", mode="lora")


def fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def params(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


def test_pinned_versions():
    import transformers

    assert (trl.__version__, peft.__version__, transformers.__version__) == (
        "1.13.0",
        "0.21.2",
        "5.17.0",
    )


@pytest.mark.parametrize("on_gpu,world", [(False, 1), (True, 1), (False, 2), (True, 4)])
def test_sft_config_arguments_exist(on_gpu, world):
    kwargs = sft_config_kwargs(P, on_gpu, world)
    assert set(kwargs) <= fields(trl.SFTConfig)
    if world == 1:  # a DDP backend would start a process group
        trl.SFTConfig(**{**kwargs, "bf16": False, "use_cpu": True})  # constructs (CPU here)


def test_trainer_and_collator_calls():
    assert {
        "model",
        "args",
        "train_dataset",
        "processing_class",
        "data_collator",
        "callbacks",
    } <= params(trl.SFTTrainer.__init__)
    assert {"resume_from_checkpoint"} <= params(trl.SFTTrainer.train)
    assert {"processor", "max_length", "completion_only_loss"} <= fields(
        DataCollatorForVisionLanguageModeling
    )


def test_lora_config_and_target_modules(tmp_path):
    assert set(lora_kwargs(P)) <= fields(peft.LoraConfig)
    assert {"model", "peft_config"} <= params(peft.get_peft_model)
    assert {"model", "model_id"} <= params(peft.PeftModel.from_pretrained)
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        create_preset("tiny", tmp_path / "t")
    )
    linear = [n for n, m in model.named_modules() if type(m).__name__ == "Linear"]
    hit = [n for n in linear if re.fullmatch(LM_LINEAR_REGEX, n)]
    assert hit and all(".language_model." in n for n in hit)
    assert any(
        n.startswith("model.visual") and n.endswith(("gate_proj", "up_proj", "down_proj"))
        for n in linear
    )


def unsloth_source(module: str) -> ast.Module:
    wheels = sorted((Path(sys.prefix) / "wheels").glob("unsloth-*.whl"))
    assert wheels, f"no unsloth wheel in {Path(sys.prefix) / 'wheels'}: run `make venv`"
    with zipfile.ZipFile(wheels[-1]) as zf:
        return ast.parse(zf.read(f"unsloth/{module}.py"))


def method_args(tree: ast.Module, cls: str, method: str) -> set[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    a = item.args
                    return {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
    raise AssertionError(f"unsloth has no {cls}.{method}")


def test_unsloth_signatures_from_the_pinned_wheel():
    loader = unsloth_source("models/loader")
    vision = unsloth_source("models/vision")
    # FastVisionModel subclasses FastModel, whose from_pretrained takes these by name
    assert any(
        isinstance(n, ast.ClassDef) and n.name == "FastVisionModel" for n in ast.walk(loader)
    )
    assert set(unsloth_load_kwargs(Path("m"))) <= method_args(
        loader, "FastModel", "from_pretrained"
    )
    assert set(unsloth_peft_kwargs(P)) <= method_args(vision, "FastBaseModel", "get_peft_model")
    assert "model" in method_args(vision, "FastBaseModel", "for_training")


@pytest.mark.parametrize("on_gpu", [False, True])
def test_grpo_calls(on_gpu):
    from v2lo_utils.grpo import GRPOParams, grpo_config_kwargs

    g = GRPOParams(
        data_dir="d", output_dir="o", model_source="m", use_vllm=True, map_reward_weight=0.1
    )
    kwargs = grpo_config_kwargs(g, on_gpu)
    assert set(kwargs) <= fields(trl.GRPOConfig)
    assert kwargs["use_vllm"] is on_gpu and kwargs["beta"] == 0.0 and kwargs["num_generations"] == 4
    assert set(lora_kwargs(g)) <= fields(peft.LoraConfig)
    assert {
        "model",
        "reward_funcs",
        "args",
        "train_dataset",
        "processing_class",
        "peft_config",
        "callbacks",
    } <= params(trl.GRPOTrainer.__init__)
    if not on_gpu:
        trl.GRPOConfig(**kwargs)
