"""The training kit SFT and GRPO share (:mod:`~v2lo_utils.sft` and :mod:`~v2lo_utils.grpo` are
siblings on it): stage parameters with their common fields, the result, LoRA settings, the
vision-tower freeze, the wall-clock budget, the CPU thread choice, checkpoints and resume, the
final save with its per-rank report, and the frame-count filter of training rows.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ParameterError, did_you_mean
from .threads import restore_threads

# the language model's linear layers; the vision tower (model.visual) has MLPs of the same names
LM_LINEAR_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(kw_only=True)
class StageParams:
    """The fields every training stage has; each stage's dataclass adds its own and may change a
    default. Profiles set them through the notebook's parameters."""

    data_dir: str
    output_dir: str
    model_source: str
    backend: str = "auto"
    mode: str = "lora"  # lora | full
    max_steps: int = -1
    epochs: float = 1.0
    learning_rate: float = 1e-4
    batch_size: int = 4
    grad_accum: int = 1
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    save_steps: int = 50
    logging_steps: int = 10
    max_frames: int | None = None  # keep rows with at most this many frames
    max_rows: int | None = None
    seed: int = 0
    freeze_vision: bool = False  # full mode: keep the vision tower (a preset's perception) fixed
    max_seconds: float = 0.0  # wall-clock budget of the training loop; 0: none
    # the last share of the run (of max_seconds or max_steps, whichever ends it first) over which
    # the learning rate falls linearly to 0 on top of its schedule (learning_rate_factor); 0: none
    cooldown: float = 0.0
    model_cache: str = "outputs/models"
    extra: dict = field(default_factory=dict)  # further trainer-config arguments

    @classmethod
    def fields(cls) -> set[str]:
        return set(cls.__dataclass_fields__)

    @classmethod
    def from_parameters(cls, values: dict, **overrides):
        """The known fields of ``values`` (a notebook's globals), then ``overrides``. A name that
        is no field but nearly one (``learning_rat``) raises ParameterError: a misspelled
        parameter never falls back to the default silently; so does an unknown override."""
        known = cls.fields()
        for key in overrides:
            if key not in known:
                raise ParameterError(f"{cls.__name__} has no field {key!r}")
        for key in values:
            if key not in known and not key.startswith("_"):
                hint = did_you_mean(key, known, cutoff=0.85)
                if hint:
                    raise ParameterError(f"parameter {key!r} is no {cls.__name__} field{hint}")
        return cls(**{**{k: v for k, v in values.items() if k in known}, **overrides})

    @classmethod
    def from_file(cls, path: str | Path):
        """Read a JSON config (the ``v2lo train sft --config`` file); unknown keys are refused."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ParameterError(f"{path}: not a readable JSON config ({err})") from err
        if not isinstance(data, dict):
            raise ParameterError(f"{path}: expected a JSON object of {cls.__name__} fields")
        unknown = set(data) - cls.fields()
        if unknown:
            raise ParameterError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as err:  # a required field missing
            raise ParameterError(f"{path}: {err}") from err


@dataclass(kw_only=True)
class StageResult:
    """What a training stage measured, and where its model went."""

    output_dir: Path
    final_dir: Path
    global_step: int
    resumed_from: str | None
    train_seconds: float
    log_history: list[dict]
    stopped_by_budget: bool = False  # max_seconds ended it before max_steps
    threads: dict | None = None  # the CPU thread counts chosen while it ran (threads.py)
    cooldown: dict | None = None  # the learning rate's cooldown: share, first step, last factor

    def to_json(self) -> dict:
        d = asdict(self)
        d["output_dir"], d["final_dir"] = str(self.output_dir), str(self.final_dir)
        return d


def lora_kwargs(p: StageParams) -> dict:
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


def budget_spent(start: float, seconds: float) -> bool:
    """Whether ``seconds`` of wall-clock time have passed since ``start`` (``time.perf_counter``);
    never with a budget of 0 (none)."""
    return bool(seconds) and time.perf_counter() - start >= seconds


def learning_rate_factor(progress: float, cooldown: float) -> float:
    """The factor on the scheduled learning rate at ``progress`` (the share of the run done, 0-1)
    with a ``cooldown`` share: 1 until 1 - cooldown, then falling linearly to 0 at the end
    (warmup-stable-decay); always 1 without a cooldown."""
    if not 0.0 <= cooldown <= 1.0:
        raise ParameterError(f"cooldown must be a share of the run in [0, 1], not {cooldown}")
    if cooldown == 0.0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - progress) / cooldown))


def time_budget(seconds: float, cooldown: float = 0.0):
    """A trainer callback that ends training (saving a checkpoint) once ``seconds`` of wall-clock
    time have passed since training, or its resumption, began; its ``stopped`` says whether it
    did. 0 means no budget. With a ``cooldown`` share, every optimizer step's learning rate is
    the schedule's times :func:`learning_rate_factor` of the run's progress: the larger of the
    budget's elapsed share and the steps' (of the trainer's ``state.max_steps``, which it derives
    from max_steps or the epochs), so a slow machine cools down within its budget as a fast one
    does within its steps; ``factor`` is the last factor applied."""
    from transformers import TrainerCallback

    learning_rate_factor(0.0, cooldown)  # refuses a bad share before training starts

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.seconds, self.start, self.stopped, self.factor = seconds, 0.0, False, 1.0
            self.cooling_from: int | None = None  # the first step the factor was below 1

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def progress(self, step: int, max_steps: int) -> float:
            by_time = (time.perf_counter() - self.start) / self.seconds if self.seconds else 0.0
            return max(by_time, step / max_steps if max_steps > 0 else 0.0)

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            if cooldown and optimizer is not None:  # the scheduler resets the rate after the step
                self.factor = learning_rate_factor(
                    self.progress(state.global_step, state.max_steps), cooldown
                )
                if self.factor < 1.0 and self.cooling_from is None:
                    self.cooling_from = state.global_step + 1
                for group in optimizer.param_groups:
                    group["lr"] *= self.factor

        def on_step_end(self, args, state, control, **kwargs):
            if budget_spent(self.start, self.seconds):
                control.should_training_stop = control.should_save = self.stopped = True

        def summary(self) -> dict | None:
            """The cooldown as :class:`StageResult` records it (None without one)."""
            if not cooldown:
                return None
            return {"share": cooldown, "from_step": self.cooling_from, "last_factor": self.factor}

    return TimeBudget()


def thread_governor():
    """A trainer callback that runs each step on the thread count a
    :class:`~v2lo_utils.threads.ThreadChooser` picks from the steps' times (CPU only; inert on
    a GPU, with one thread, or with ``V2LO_THREADS=fixed``); its ``summary()`` is the choices."""
    from transformers import TrainerCallback

    from .threads import next_threads, thread_chooser

    class ThreadGovernor(TrainerCallback):
        def __init__(self) -> None:
            self.chooser = thread_chooser()
            self.t0 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            if self.chooser is not None:
                next_threads(self.chooser)
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.chooser is not None:
                self.chooser.record(time.perf_counter() - self.t0)

        def summary(self) -> dict | None:
            return self.chooser.summary() if self.chooser is not None else None

    return ThreadGovernor()


def select_rows(
    rows: list[dict], max_frames: int | None = None, long_fraction: float = 0.0, seed: int = 0
) -> list[dict]:
    """The rows of at most ``max_frames`` frames, plus a seeded ``long_fraction`` of the longer
    ones (long clips cost more per step; a few of them teach the model to keep the format)."""
    if not 0.0 <= long_fraction <= 1.0:
        raise ValueError(f"long_fraction must be in [0, 1], not {long_fraction}")
    keep = [r for r in rows if max_frames is None or r["num_frames"] <= max_frames]
    longer = [r for r in rows if max_frames is not None and r["num_frames"] > max_frames]
    picked = set(random.Random(seed).sample(range(len(longer)), round(long_fraction * len(longer))))
    return keep + [r for i, r in enumerate(longer) if i in picked]


def checkpoint_step(checkpoint: Path | None) -> int:
    """The step of a checkpoint-N folder; 0 for None."""
    return int(checkpoint.name.split("-")[-1]) if checkpoint else 0


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint-N folder with the largest N, or None."""
    ckpts = [d for d in Path(output_dir).glob("checkpoint-*") if d.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda d: int(d.name.split("-")[-1]), default=None)


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


def world_size() -> int:
    """Processes in this run: torch.distributed's world when initialised, else WORLD_SIZE."""
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def write_rank_report(output_dir: Path, model, global_step: int) -> Path:
    """rank<R>.json: this process's rank, the world size, the step reached and the digest."""
    import os

    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
    path = output_dir / f"rank{rank}.json"
    doc = {
        "rank": rank,
        "world_size": world_size(),
        "global_step": global_step,
        "digest": parameter_digest(model),
    }
    path.write_text(json.dumps(doc))
    return path


def run_trainer(trainer, p: StageParams, processor, model=None) -> dict:
    """Train (resuming from the last checkpoint in ``p.output_dir``), save the final model, and
    return the fields of a :class:`StageResult` plus ``steps_done`` (this call's steps)."""
    resume = last_checkpoint(p.output_dir)
    governor = thread_governor()
    trainer.add_callback(governor)
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        restore_threads(governor.chooser)
    seconds = time.perf_counter() - t0
    final = save_final(trainer, processor, Path(p.output_dir), model or trainer.model)
    return {
        "output_dir": Path(p.output_dir),
        "final_dir": final,
        "global_step": trainer.state.global_step,
        "resumed_from": str(resume) if resume else None,
        "train_seconds": seconds,
        "log_history": list(trainer.state.log_history),
        "steps_done": trainer.state.global_step - checkpoint_step(resume),
        "threads": governor.summary(),
    }
