"""GRPO reinforcement learning with TRL's GRPOTrainer and the core's rewards (spec sections 3-4).

The reward is the paper's: 0.9 * accuracy + 0.1 * format (TRL reward functions with weights), plus
an optional map-aware reward (off in the paper profile): ``map_reward_kind`` 'iou' (summed box IoU,
:func:`~v2lo_utils.rewards.map_reward`) or 'placement' (graded center error,
:func:`~v2lo_utils.rewards.placement_reward`), weighted by ``map_reward_weight``. Dataset columns
reach the reward functions as keyword arguments: ``answer`` (accuracy), ``map`` (map quality) and
``task`` (the per-task accuracy this module logs as ``accuracy/<task>``).

Rollouts use transformers generation, or vLLM on a GPU when ``use_vllm`` is set and vllm is
installed. Checkpoints and resume work as in SFT.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .exporters import export_rows, trl_dataset
from .generation import grouped_query_sdpa
from .presets import vision_token_ids
from .rewards import (
    PAPER_REWARD_WEIGHTS,
    accuracy_reward,
    format_reward,
    map_reward,
    placement_reward,
)
from .training import (
    StageParams,
    StageResult,
    freeze_vision_tower,
    lora_kwargs,
    run_trainer,
    select_rows,
    time_budget,
)


@dataclass(kw_only=True)
class GRPOParams(StageParams):
    """Everything one GRPO run needs (the common fields in :class:`StageParams`); the paper's
    values are the defaults where it gives them."""

    learning_rate: float = 1e-6
    weight_decay: float = 0.01
    batch_size: int = 4  # completions per device per step (a multiple of num_generations)
    num_generations: int = 4
    temperature: float = 1.0
    beta: float = 0.0  # no KL term
    max_completion_length: int = 500
    map_reward_weight: float = 0.0
    map_reward_kind: str = "iou"  # or "placement" (see the module docstring)
    logging_steps: int = 1
    split: str = "train"
    use_vllm: bool = False


def grpo_rows(rows: list[dict], root: str | Path, max_frames: int | None = None) -> list[dict]:
    """Dataset rows -> GRPO rows: the user turn as prompt, frame paths, and the reward columns."""
    return [
        {**g, "map": json.dumps(g["map"]), "params": json.dumps(g["params"])}
        for g in export_rows(select_rows(rows, max_frames), "trl-grpo", root)
    ]


def accuracy_by_task(completions, answer, task, log_metric=None, **kwargs) -> list[float]:
    """The paper's accuracy reward; also logs its mean per task when TRL passes ``log_metric``."""
    scores = accuracy_reward(completions, answer=answer)
    if log_metric is not None:
        by_task: dict[str, list[float]] = defaultdict(list)
        for t, s in zip(task, scores, strict=True):
            by_task[t].append(s)
        for t, vals in by_task.items():
            log_metric(f"accuracy/{t}", sum(vals) / len(vals))
    return scores


MAP_REWARDS = {"iou": map_reward, "placement": placement_reward}


def reward_setup(map_weight: float = 0.0, map_kind: str = "iou") -> tuple[list, list[float]]:
    """Reward functions and weights: 0.9 accuracy + 0.1 format (+ a map-aware reward, of
    :data:`MAP_REWARDS`, when ``map_weight`` > 0)."""
    if map_kind not in MAP_REWARDS:
        raise ValueError(f"map_reward_kind {map_kind!r}: one of {', '.join(MAP_REWARDS)}")
    funcs, weights = [accuracy_by_task, format_reward], list(PAPER_REWARD_WEIGHTS)
    if map_weight > 0:
        funcs.append(MAP_REWARDS[map_kind])
        weights.append(map_weight)
    return funcs, weights


def grpo_config_kwargs(p: GRPOParams, on_gpu: bool, suppress_ids: list[int] = ()) -> dict:
    """Arguments of trl.GRPOConfig for this run and device; ``suppress_ids`` are tokens rollouts
    may not sample (transformers generation)."""
    _, weights = reward_setup(p.map_reward_weight, p.map_reward_kind)
    kwargs = {
        "output_dir": p.output_dir,
        "max_steps": p.max_steps,
        "num_train_epochs": p.epochs,
        "learning_rate": p.learning_rate,
        "weight_decay": p.weight_decay,
        "per_device_train_batch_size": p.batch_size,
        "gradient_accumulation_steps": p.grad_accum,
        "num_generations": p.num_generations,
        "temperature": p.temperature,
        "beta": p.beta,
        "max_completion_length": p.max_completion_length,
        "reward_weights": weights,
        "logging_steps": p.logging_steps,
        "save_strategy": "steps",
        "save_steps": p.save_steps,
        "seed": p.seed,
        "bf16": on_gpu,
        "use_cpu": not on_gpu,
        "remove_unused_columns": False,
        "report_to": "none",
        "log_completions": False,
        "use_vllm": bool(p.use_vllm and on_gpu),
        "dataloader_num_workers": 0,
    }
    if kwargs["use_vllm"]:
        kwargs.update(vllm_mode="colocate", vllm_gpu_memory_utilization=0.3)
    elif suppress_ids:
        kwargs["generation_kwargs"] = {"suppress_tokens": list(suppress_ids)}
    return {**kwargs, **p.extra}


@dataclass(kw_only=True)
class GRPOResult(StageResult):
    steps_per_second: float


def train_grpo(p: GRPOParams, callbacks: list | None = None) -> GRPOResult:
    """Run (or resume) GRPO from ``p.model_source`` (the merged SFT model)."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from .dataset import Dataset
    from .models import load_model

    if p.use_vllm and torch.cuda.is_available():
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError("use_vllm needs vllm: pip install -e .[gpu]")
    ds = Dataset.load(p.data_dir)
    rows = grpo_rows(ds.rows.get(p.split, []), ds.root, p.max_frames)[: p.max_rows or None]
    if not rows:
        raise ValueError(f"{p.data_dir}: no {p.split} rows for GRPO (max_frames={p.max_frames})")
    loaded = load_model(p.model_source, p.backend, p.model_cache)
    model = loaded.model
    peft_config = None
    if p.mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(**lora_kwargs(p))
    elif p.mode != "full":
        raise ValueError(f"unknown GRPO mode {p.mode!r}: lora or full")
    elif p.freeze_vision:
        freeze_vision_tower(model)
    funcs, _ = reward_setup(p.map_reward_weight, p.map_reward_kind)
    on_gpu = torch.cuda.is_available()
    # TRL re-tokenises prompts for the loss with the processor's default padding side and
    # expects it to be 'left', as its own processors are loaded (else mm_token_type_ids and the
    # left-padded prompt ids disagree when prompts differ in length)
    loaded.processor.tokenizer.padding_side = "left"
    budget = time_budget(p.max_seconds, p.cooldown)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=GRPOConfig(
            **grpo_config_kwargs(p, on_gpu, vision_token_ids(loaded.processor.tokenizer))
        ),
        train_dataset=trl_dataset(rows),
        processing_class=loaded.processor,
        peft_config=peft_config,
        callbacks=[*(callbacks or []), budget],
    )
    with grouped_query_sdpa():  # the rollouts' batched decoding (and the loss), on CPU
        run = run_trainer(trainer, p, loaded.processor)
    done = run.pop("steps_done")
    return GRPOResult(
        **run,
        steps_per_second=done / run["train_seconds"] if run["train_seconds"] > 0 else 0.0,
        stopped_by_budget=budget.stopped,
        cooldown=budget.summary(),
    )
