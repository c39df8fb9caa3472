"""Supervised fine-tuning of Qwen2.5-VL on map/think/answer targets with TRL's SFTTrainer.

Rows come from the TRL export of a dataset (user turn: the frames as image parts, then the prompt;
assistant turn: the target), split into prompt and completion so that the loss covers the
assistant turn only. Two modes:

- ``lora``: LoRA on the language model's linear layers (q/k/v/o and the MLP), the vision tower
  frozen: the paper's recipe (spec section 4) for a pretrained checkpoint.
- ``full``: every parameter trains: for a randomly initialised preset, where LoRA has nothing to
  adapt.

Checkpoints are written every ``save_steps``; calling :func:`train_sft` again with the same output
folder continues from the last one. The final model (or adapter) is saved as safetensors under
``<output_dir>/final`` with the processor.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .models import count_parameters, load_model

# the language model's linear layers; the vision tower (model.visual) has MLPs of the same names
LM_LINEAR_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class StageParams:
    """What the training stages' parameter dataclasses share."""

    @classmethod
    def from_parameters(cls, values: dict, **overrides):
        """Pick the known fields out of ``values`` (a notebook's parameters), then ``overrides``."""
        known = set(cls.__dataclass_fields__)
        return cls(**{**{k: v for k, v in values.items() if k in known}, **overrides})


class StageResult:
    """What the training stages' results share: JSON with the folders as strings."""

    def to_json(self) -> dict:
        d = asdict(self)
        d["output_dir"], d["final_dir"] = str(self.output_dir), str(self.final_dir)
        return d


@dataclass
class SFTParams(StageParams):
    """Everything one SFT run needs; profiles set these through the notebook's parameters."""

    data_dir: str
    output_dir: str
    model_source: str = "tiny"
    backend: str = "auto"
    mode: str = "full"  # full | lora
    max_steps: int = -1
    epochs: float = 1.0
    learning_rate: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    warmup: float = 0.0  # steps, or a fraction of the run when below 1
    lr_scheduler: str = ""  # transformers scheduler name; default: cosine for lora, linear for full
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    save_steps: int = 50
    logging_steps: int = 10
    max_length: int | None = None
    max_frames: int | None = None  # keep rows with at most this many frames
    long_fraction: float = 0.0  # and this fraction of the longer rows (seeded), for their format
    max_rows: int | None = None
    seed: int = 0
    gradient_checkpointing: bool = False
    freeze_vision: bool = False  # full mode: keep the vision tower (a preset's perception) fixed
    max_seconds: float = 0.0  # wall-clock budget of the training loop; 0: none
    model_cache: str = "outputs/models"
    extra: dict = field(default_factory=dict)  # further SFTConfig arguments

    @classmethod
    def from_file(cls, path: str | Path) -> SFTParams:
        """Read a JSON config (the ``v2lo train sft --config`` file)."""
        data = json.loads(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown SFT setting(s) {', '.join(sorted(unknown))}")
        return cls(**data)


def sft_rows(
    rows: list[dict],
    root: str | Path,
    max_frames: int | None = None,
    long_fraction: float = 0.0,
    seed: int = 0,
) -> list[dict]:
    """Dataset rows -> TRL prompt/completion rows with image paths (conversational): the rows of
    at most ``max_frames`` frames, plus a seeded ``long_fraction`` of the longer ones (long clips
    cost more per step; a few of them teach the model to keep the format there)."""
    from .exporters import export_rows

    if not 0.0 <= long_fraction <= 1.0:
        raise ValueError(f"long_fraction must be in [0, 1], not {long_fraction}")
    keep = [r for r in rows if max_frames is None or r["num_frames"] <= max_frames]
    longer = [r for r in rows if max_frames is not None and r["num_frames"] > max_frames]
    picked = set(random.Random(seed).sample(range(len(longer)), round(long_fraction * len(longer))))
    keep += [r for i, r in enumerate(longer) if i in picked]
    out = []
    for ex in export_rows(keep, "trl-sft", root):
        user, assistant = ex["messages"]
        out.append({"prompt": [user], "completion": [assistant], "images": ex["images"]})
    return out


def time_budget(seconds: float):
    """A trainer callback that ends training (saving a checkpoint) once ``seconds`` of wall-clock
    time have passed since training, or its resumption, began; its ``stopped`` says whether it
    did. 0 means no budget."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.seconds, self.start, self.stopped = seconds, 0.0, False

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.seconds and time.perf_counter() - self.start >= self.seconds:
                control.should_training_stop = control.should_save = self.stopped = True

    return TimeBudget()


def freeze_vision_tower(model) -> int:
    """Stop the gradients of the vision tower (``model.visual`` or ``model.model.visual``);
    returns how many parameters it froze."""
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None) or getattr(model, "visual", None)
    if visual is None:
        raise ValueError("the model has no vision tower (visual) to freeze")
    n = 0
    for param in visual.parameters():
        param.requires_grad = False
        n += param.numel()
    return n


class FrameLoadingCollator:
    """TRL's vision-language collator, fed PIL frames opened from the rows' image paths."""

    def __init__(self, processor, max_length: int | None = None) -> None:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self.inner = DataCollatorForVisionLanguageModeling(
            processor=processor, max_length=max_length, completion_only_loss=True
        )

    def __call__(self, examples: list[dict]) -> dict:
        from PIL import Image

        loaded = []
        for ex in examples:
            images = []
            for p in ex["images"]:
                if isinstance(p, str):
                    with Image.open(p) as im:
                        images.append(im.convert("RGB"))
                else:
                    images.append(p)
            loaded.append({**ex, "images": images})
        return self.inner(loaded)


def lora_kwargs(p) -> dict:
    """Arguments of peft.LoraConfig from a stage's ``lora_r``, ``lora_alpha`` and ``lora_dropout``:
    the language model's linear layers only."""
    return {
        "r": p.lora_r,
        "lora_alpha": p.lora_alpha,
        "lora_dropout": p.lora_dropout,
        "target_modules": LM_LINEAR_REGEX,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def unsloth_peft_kwargs(p: SFTParams) -> dict:
    """Arguments of FastVisionModel.get_peft_model: language layers only, vision frozen."""
    return {
        "finetune_vision_layers": False,
        "finetune_language_layers": True,
        "finetune_attention_modules": True,
        "finetune_mlp_modules": True,
        "r": p.lora_r,
        "lora_alpha": p.lora_alpha,
        "lora_dropout": p.lora_dropout,
        "bias": "none",
        "random_state": p.seed,
        "use_rslora": False,
    }


def sft_config_kwargs(p: SFTParams, on_gpu: bool, world_size: int = 1) -> dict:
    """Arguments of trl.SFTConfig for this run and device."""
    kwargs = {
        "output_dir": p.output_dir,
        "max_steps": p.max_steps,
        "num_train_epochs": p.epochs,
        "learning_rate": p.learning_rate,
        "per_device_train_batch_size": p.batch_size,
        "gradient_accumulation_steps": p.grad_accum,
        "warmup_steps": p.warmup,
        "lr_scheduler_type": p.lr_scheduler or ("cosine" if p.mode == "lora" else "linear"),
        "logging_steps": p.logging_steps,
        "save_strategy": "steps",
        "save_steps": p.save_steps,
        "seed": p.seed,
        "data_seed": p.seed,
        "bf16": on_gpu,
        "use_cpu": not on_gpu,
        "max_length": p.max_length,
        "remove_unused_columns": False,
        "dataset_kwargs": {"skip_prepare_dataset": True},
        "gradient_checkpointing": p.gradient_checkpointing,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
    }
    if world_size > 1:  # DDP: gloo on CPU, NCCL on GPUs
        kwargs["ddp_backend"] = "nccl" if on_gpu else "gloo"
        kwargs["ddp_find_unused_parameters"] = False
    return {**kwargs, **p.extra}


def checkpoint_step(checkpoint: Path | None) -> int:
    """The step of a checkpoint-N folder; 0 for None."""
    return int(checkpoint.name.split("-")[-1]) if checkpoint else 0


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint-N folder with the largest N, or None."""
    ckpts = [d for d in Path(output_dir).glob("checkpoint-*") if d.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda d: int(d.name.split("-")[-1]), default=None)


@dataclass
class SFTResult(StageResult):
    output_dir: Path
    final_dir: Path
    global_step: int
    resumed_from: str | None
    train_seconds: float
    samples_per_second: float
    log_history: list[dict]
    parameters: dict
    stopped_by_budget: bool = False  # max_seconds ended it before max_steps


def prepare_model(p: SFTParams):
    """Load the model for training in the requested mode; returns (model, processor, backend)."""
    loaded = load_model(p.model_source, p.backend, p.model_cache)
    model = loaded.model
    if p.mode not in ("full", "lora"):
        raise ValueError(f"unknown SFT mode {p.mode!r}: full or lora")
    if p.mode == "full" and p.freeze_vision:
        freeze_vision_tower(model)
    if p.mode == "lora":
        if loaded.backend == "unsloth":
            from unsloth import FastVisionModel

            model = FastVisionModel.get_peft_model(model, **unsloth_peft_kwargs(p))
            FastVisionModel.for_training(model)
        else:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(**lora_kwargs(p)))
    return model, loaded.processor, loaded.backend


def train_sft(p: SFTParams, callbacks: list | None = None) -> SFTResult:
    """Run (or resume) SFT; returns where the model went and what the run measured."""
    from datasets import Dataset as HFDataset

    from .dataset import Dataset

    ds = Dataset.load(p.data_dir)
    rows = sft_rows(ds.rows.get("train", []), ds.root, p.max_frames, p.long_fraction, p.seed)
    if p.max_rows:
        rows = rows[: p.max_rows]
    if not rows:
        raise ValueError(f"{p.data_dir}: no training rows (max_frames={p.max_frames})")
    model, processor, backend = prepare_model(p)
    import torch
    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available()
    world = (
        torch.distributed.get_world_size() if torch.distributed.is_initialized() else _env_world()
    )
    args = SFTConfig(**sft_config_kwargs(p, on_gpu, world))
    budget = time_budget(p.max_seconds)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=HFDataset.from_list(rows),
        processing_class=processor,
        data_collator=FrameLoadingCollator(processor, p.max_length),
        callbacks=[*(callbacks or []), budget],
    )
    resume = last_checkpoint(p.output_dir)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    final = save_final(trainer, processor, Path(p.output_dir), model)
    done = trainer.state.global_step - checkpoint_step(resume)
    return SFTResult(
        output_dir=Path(p.output_dir),
        final_dir=final,
        global_step=trainer.state.global_step,
        resumed_from=str(resume) if resume else None,
        train_seconds=seconds,
        samples_per_second=done * p.batch_size * p.grad_accum * world / max(seconds, 1e-9),
        log_history=list(trainer.state.log_history),
        parameters={**count_parameters(model), "backend": backend, "mode": p.mode},
        stopped_by_budget=budget.stopped,
    )


def save_final(trainer, processor, output_dir: Path, model) -> Path:
    """Save the trained model (or adapter) and the processor to ``output_dir/final`` (rank 0), and
    every rank's report; returns the final folder."""
    final = output_dir / "final"
    if trainer.is_world_process_zero():
        trainer.save_model(str(final))
        processor.save_pretrained(final)
    write_rank_report(output_dir, model, trainer.state.global_step)
    return final


def parameter_digest(model) -> str:
    """sha256 of the trainable parameters (names and float32 values): equal across DDP ranks."""
    import hashlib

    h = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if param.requires_grad:
            h.update(name.encode())
            h.update(param.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def write_rank_report(output_dir: Path, model, global_step: int) -> Path:
    """rank<R>.json: this process's rank, the world size, the step reached and the digest."""
    import os

    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
    world = dist.get_world_size() if dist.is_initialized() else _env_world()
    path = output_dir / f"rank{rank}.json"
    doc = {
        "rank": rank,
        "world_size": world,
        "global_step": global_step,
        "digest": parameter_digest(model),
    }
    path.write_text(json.dumps(doc))
    return path


def _env_world() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def loss_curve(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, training loss) pairs of a run's log."""
    return [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
