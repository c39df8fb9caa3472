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
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .models import count_parameters, load_model
from .prompting import load_image
from .training import (
    StageParams,
    StageResult,
    freeze_vision_tower,
    lora_kwargs,
    run_trainer,
    select_rows,
    time_budget,
    world_size,
)

# the SFT auxiliary losses, in lookup_trainer's order: each has SFTParams.<name>_weight, logs
# <name>_loss and is summed up in SFTResult.<name>; all but the last teach one attention head
HEADS = ("lookup", "copy", "number", "option", "frame", "seek", "regression")


@dataclass(kw_only=True)
class SFTParams(StageParams):
    """Everything one SFT run needs (the common fields in :class:`StageParams`)."""

    model_source: str = "tiny"
    mode: str = "full"  # full | lora
    learning_rate: float = 1e-3
    batch_size: int = 8
    warmup: float = 0.0  # steps, or a fraction of the run when below 1
    lr_scheduler: str = ""  # transformers scheduler name; default: cosine for lora, linear for full
    max_length: int | None = None
    long_fraction: float = 0.0  # of the rows over max_frames, kept (seeded) for their format
    gradient_checkpointing: bool = False
    # presets: weight of the lookup head's loss on the map's objects in the first frame (the
    # grounding stage's, perception.py), added to the map/think/answer loss; 0: none
    lookup_weight: float = 0.0
    # presets: weight of the copy head's loss (perception.copy_batch): the head writing a map
    # entry attends to the question's word for its object; 0: none
    copy_weight: float = 0.0
    # presets: weight of the number head's loss (perception.number_batch): the position writing a
    # coordinate in the think attends to the map's positions holding it; 0: none
    number_weight: float = 0.0
    # presets: weight of the option head's loss (perception.option_batch): the position writing
    # an option letter attends to that option's text in the question; 0: none
    option_weight: float = 0.0
    # presets: weight of the frame head's loss (perception.frame_batch): image tokens attend to
    # the earlier frames' (the first frame's: to the first token), so they carry their frame; 0: none
    frame_weight: float = 0.0
    # presets: weight of the seek head's loss (perception.clip_tokens): the positions writing a map
    # entry's x0 and y0 attend to its object in every frame that shows it; 0: none
    seek_weight: float = 0.0
    # presets: weight of the coordinate regression loss (:func:`coordinate_regression`): the
    # squared error (m^2) of the mean of the model's distribution over coordinate tokens, the
    # value mean decoding writes (generation.py); 0: none
    regression_weight: float = 0.0
    # the target's form (v2lo_utils.targets: metric, grid, no_map, answer_only) and the grid's
    # cells a side; the rows' prompts ask for that form
    target_form: str = "metric"
    grid_size: int = 10


def coordinate_regression(hidden, labels, output_weight, ids, values):
    """Mean over the label positions holding a coordinate token (``ids``, worth ``values`` m) of
    (the mean value of the model's distribution over the coordinate tokens - the label's value)^2,
    in m^2. ``hidden`` [batch, seq, dim]: the language model's final hidden states, each
    predicting the next position's label through ``output_weight`` [vocab, dim] (the logits of the
    coordinate tokens only are computed). None when no label is a coordinate. Unlike
    cross-entropy it is smaller for a near miss than for a far one, and where the frames cannot
    settle a coordinate its least value is at the expected coordinate, not at one confident guess."""
    import torch

    shifted = labels[:, 1:]
    where = torch.isin(shifted, ids)
    if not where.any():
        return None
    logits = hidden[:, :-1][where] @ output_weight[ids].T
    probs = torch.softmax(logits.float(), dim=-1)
    value_of = torch.zeros(int(ids.max()) + 1, device=values.device, dtype=values.dtype)
    value_of[ids] = values
    return ((probs @ values - value_of[shifted[where]]) ** 2).mean()


def sft_rows(
    rows: list[dict],
    root: str | Path,
    max_frames: int | None = None,
    long_fraction: float = 0.0,
    seed: int = 0,
) -> list[dict]:
    """Dataset rows -> the ``trl-prompt-completion`` export (image paths; the loss covers the
    completion only) of the rows :func:`~v2lo_utils.training.select_rows` keeps."""
    from .exporters import export_rows

    rows = select_rows(rows, max_frames, long_fraction, seed)
    return export_rows(rows, "trl-prompt-completion", root)


class FrameLoadingCollator:
    """TRL's vision-language collator, fed PIL frames opened from the rows' image paths. Rows
    with a ``lookup`` field (JSON: :func:`~v2lo_utils.perception.first_frame_tokens`'s per-object
    token lists) also get the lookup head's targets (:func:`~v2lo_utils.perception.lookup_batch`),
    rows with a ``seek`` field (:func:`~v2lo_utils.perception.clip_tokens`'s) the seek head's;
    with ``copy`` every batch gets the copy head's (:func:`~v2lo_utils.perception.copy_batch`),
    with ``numbers`` the number head's (:func:`~v2lo_utils.perception.number_batch`), with
    ``options`` the option head's (:func:`~v2lo_utils.perception.option_batch`), with ``frames``
    the frame head's (:func:`~v2lo_utils.perception.frame_batch`)."""

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        copy: bool = False,
        numbers: bool = False,
        options: bool = False,
        frames: bool = False,
    ) -> None:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self.processor = processor
        self.copy = copy
        self.numbers = numbers
        self.options = options
        self.frames = frames
        self.inner = DataCollatorForVisionLanguageModeling(
            processor=processor, max_length=max_length, completion_only_loss=True
        )

    def __call__(self, examples: list[dict]) -> dict:
        loaded = [
            {
                **{k: v for k, v in ex.items() if k not in ("lookup", "seek")},
                "images": [load_image(p) if isinstance(p, str) else p for p in ex["images"]],
            }
            for ex in examples
        ]
        batch = self.inner(loaded)
        fields = [f for f in ("lookup", "seek") if any(f in ex for ex in examples)]
        if fields or self.frames:
            from .perception import frame_batch, lookup_batch

            image_id, entry_ids, merge = self._lookup_ids
            per_frame = int(batch["image_grid_thw"][0].prod()) // merge**2
            coords = self._number_ids[0]
            for f in fields:  # lookup: first-frame tokens; seek: every frame's (per_frame None)
                tokens = [json.loads(ex.get(f) or "[]") for ex in examples]
                frames = per_frame if f == "lookup" else None
                batch |= lookup_batch(batch, tokens, image_id, entry_ids, frames, coords, name=f)
            if self.frames:
                batch |= frame_batch(batch, image_id, per_frame)
        if self.copy:
            from .perception import copy_batch

            batch |= copy_batch(batch, self._entry_names)
        if self.numbers:
            from .perception import number_batch

            batch |= number_batch(batch, *self._number_ids)
        if self.options:
            from .perception import option_batch

            letters, dot, stop, after = self._option_ids
            batch |= option_batch(batch, letters, dot, stop, self._number_ids[1], after)
        return batch

    @cached_property
    def _entry_names(self) -> dict[int, int]:
        """Each map-entry opening's id -> its category name's id."""
        from .presets import category_tokens, entry_tokens

        tok = self.processor.tokenizer
        entries = tok.convert_tokens_to_ids(list(entry_tokens()))
        return dict(zip(entries, tok.convert_tokens_to_ids(list(category_tokens())), strict=True))

    @cached_property
    def _token_texts(self) -> dict[int, str]:
        """Every vocabulary id -> its token's text (decoded once per collator)."""
        tok = self.processor.tokenizer
        return {i: tok.convert_tokens_to_string([t]) for t, i in tok.get_vocab().items()}

    @cached_property
    def _number_ids(self) -> tuple[set, set]:
        """The coordinate tokens' ids; the ids of the tokens holding ``</`` (the map's end)."""
        from .presets import COORD_TOKENS

        tok = self.processor.tokenizer
        close = {i for i, t in self._token_texts.items() if "</" in t}
        return set(tok.convert_tokens_to_ids(list(COORD_TOKENS))), close

    @cached_property
    def _option_ids(self) -> tuple[dict, int, set, set]:
        """The option letters' ids (alone or after a space or '>') -> the letter alone's, the id of
        ``.``, the ids ending an option's text (tokens holding a newline, special tokens) and
        the ids that can follow a lone letter (not starting with a letter or digit)."""
        from .questions import LETTERS

        tok, text = self.processor.tokenizer, self._token_texts
        stop = {i for i, t in text.items() if "\n" in t}
        stop |= {i for i, t in tok.added_tokens_decoder.items() if t.special}
        after = {i for i, t in text.items() if not t[:1].isalnum()}
        alone = {letter: tok.convert_tokens_to_ids(letter) for letter in LETTERS}
        letters = {  # 'C', ' C', '>C': a letter after no letter or digit
            i: alone[t[-1]]
            for i, t in text.items()
            if t[-1:] in alone and not any(c.isalnum() for c in t[:-1])
        }
        return letters, tok.convert_tokens_to_ids("."), stop, after

    @cached_property
    def _lookup_ids(self) -> tuple[int, set, int]:
        """The image token's id, the map-entry openings' ids, the vision merge size."""
        merge = getattr(self.processor.image_processor, "merge_size", 2)
        image_id = self.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        return image_id, set(self._entry_names), merge


def lookup_trainer(
    base,
    weight: float,
    copy_weight: float = 0.0,
    number_weight: float = 0.0,
    option_weight: float = 0.0,
    frame_weight: float = 0.0,
    seek_weight: float = 0.0,
    regression_weight: float = 0.0,
):
    """``base`` (TRL's SFTTrainer) whose loss adds ``weight`` x the lookup head's loss (the mean
    over the batch's map entries of -log(the head's attention mass on the entry's object in the
    first frame)), ``copy_weight`` x the copy head's (-log(its mass on the question's word for
    the entry's object), ``number_weight`` x the number head's (-log(its mass on the map's
    positions of the think's coordinate)), ``option_weight`` x the option head's (-log(its
    mass on the text of the option whose letter comes next)), ``frame_weight`` x the frame
    head's (-log(an image token's mass on the earlier frames' image tokens, or the first
    token)) and ``seek_weight`` x the seek head's (-log(its mass on the entry's object in every
    frame)), from the heads' layer inputs captured during the forward pass
    (:func:`~v2lo_utils.perception.lookup_mass`); logged as ``<head>_loss``; and
    ``regression_weight`` x :func:`coordinate_regression` on the final hidden states, logged as
    ``regression_loss``."""
    from .perception import (
        COPY_HEAD,
        FRAME_HEAD,
        LOOKUP_HEAD,
        NUMBER_HEAD,
        OPTION_HEAD,
        SEEK_HEAD,
        lookup_attention,
        lookup_mass,
        lookup_nll,
    )

    every = {
        "lookup": (LOOKUP_HEAD, weight),
        "copy": (COPY_HEAD, copy_weight),
        "number": (NUMBER_HEAD, number_weight),
        "option": (OPTION_HEAD, option_weight),
        "frame": (FRAME_HEAD, frame_weight),
        "seek": (SEEK_HEAD, seek_weight),
    }
    heads = {k: v for k, v in every.items() if v[1] > 0}
    coordinates: list = []  # the coordinate tokens' ids and values, read once from the tokenizer

    class LookupSFTTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = {
                k: [inputs.pop(f"{k}_{f}", None) for f in ("rows", "queries", "keys")]
                for k in every  # every head's targets leave the inputs, used or not
            }
            layers = {k: lookup_attention(model, head[0]) for k, (head, _) in heads.items()}
            seen: dict = {}
            hooks = []
            if regression_weight > 0:  # the final hidden states (TRL's loss skips the logits)

                def final(module, args, output):
                    seen["final"] = output

                hooks.append(model.get_decoder().norm.register_forward_hook(final))
            for name, layer in layers.items():

                def capture(module, args, kwargs, name=name):
                    hidden = args[0] if args else kwargs["hidden_states"]
                    seen[name] = (hidden, kwargs["position_embeddings"])

                hooks.append(layer.register_forward_pre_hook(capture, with_kwargs=True))
            try:
                loss, outputs = super().compute_loss(
                    model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
                )
            finally:
                for hook in hooks:
                    hook.remove()
            mode = "train" if model.training else "eval"
            for name, ((_, head), w) in heads.items():
                rows, queries, keys = targets[name]
                if rows is None or not len(rows) or name not in seen:
                    continue
                hidden, rope = seen[name]
                mask = inputs["attention_mask"]
                args = (hidden, rope, mask, rows, queries, keys)
                extra = lookup_nll(lookup_mass(layers[name], *args, head=head))
                loss = loss + w * extra.to(loss.dtype)
                self._metrics[mode][f"{name}_loss"].append(float(extra.detach()))
            if regression_weight > 0:
                if not coordinates:
                    from .generation import coordinate_tensors

                    coordinates.extend(coordinate_tensors(self.processing_class.tokenizer))
                hidden = seen["final"]
                ids, values = (t.to(hidden.device) for t in coordinates)
                weight = model.get_output_embeddings().weight
                extra = coordinate_regression(hidden, inputs["labels"], weight, ids, values)
                if extra is not None:
                    loss = loss + regression_weight * extra.to(loss.dtype)
                    self._metrics[mode]["regression_loss"].append(float(extra.detach()))
            return (loss, outputs) if return_outputs else loss

    return LookupSFTTrainer


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


@dataclass(kw_only=True)
class SFTResult(StageResult):
    samples_per_second: float
    parameters: dict
    lookup: dict | None = None  # the lookup loss's weight, first and last logged values
    copy: dict | None = None  # the copy loss's, likewise
    number: dict | None = None  # the number loss's, likewise
    option: dict | None = None  # the option loss's, likewise
    frame: dict | None = None  # the frame loss's, likewise
    seek: dict | None = None  # the seek loss's, likewise
    regression: dict | None = None  # the coordinate regression loss's, likewise


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


def training_rows(p: SFTParams, ds) -> list[dict]:
    """The dataset's training rows this run trains on (``max_frames``, ``long_fraction``,
    ``max_rows``), in the run's target form (:func:`~v2lo_utils.targets.form_row`)."""
    from .targets import form_row

    chosen = select_rows(ds.rows.get("train", []), p.max_frames, p.long_fraction, p.seed)
    if p.max_rows:
        chosen = chosen[: p.max_rows]
    if not chosen:
        raise ValueError(f"{p.data_dir}: no training rows (max_frames={p.max_frames})")
    return [form_row(r, p.target_form, p.grid_size) for r in chosen]


def train_sft(p: SFTParams, callbacks: list | None = None) -> SFTResult:
    """Run (or resume) SFT; returns where the model went and what the run measured."""
    from datasets import Dataset as HFDataset

    from .dataset import Dataset
    from .exporters import export_rows

    ds = Dataset.load(p.data_dir)
    chosen = training_rows(p, ds)
    rows = export_rows(chosen, "trl-prompt-completion", ds.root)
    model, processor, backend = prepare_model(p)
    weights = tuple(getattr(p, f"{h}_weight") for h in HEADS)
    extra = any(w > 0 for w in weights)
    if extra:
        from .presets import COORD_TOKENS, entry_tokens
        from .questions import LETTERS

        vocab = processor.tokenizer.get_vocab()
        if any(t not in vocab for t in (*entry_tokens(), *COORD_TOKENS, *LETTERS, ".")):
            raise ValueError(
                f"{p.model_source}: {', '.join(f'{h}_weight' for h in HEADS)} need a preset's "
                "tokenizer (one token per map-entry opening, coordinate and option letter); set "
                "them to 0 for this model"
            )
    from .perception import clip_tokens, first_frame_tokens

    for field, tokens_of in (("lookup", first_frame_tokens), ("seek", clip_tokens)):
        if getattr(p, f"{field}_weight") > 0:  # the heads' image-token targets, from the renderer
            for row, tokens in zip(rows, tokens_of(ds, chosen), strict=True):
                row[field] = json.dumps(tokens)
    import torch
    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available()
    world = world_size()
    args = SFTConfig(**sft_config_kwargs(p, on_gpu, world))
    budget = time_budget(p.max_seconds, p.cooldown)
    trainer_class = lookup_trainer(SFTTrainer, *weights) if extra else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=HFDataset.from_list(rows),
        processing_class=processor,
        data_collator=FrameLoadingCollator(
            processor,
            p.max_length,
            copy=p.copy_weight > 0,
            numbers=p.number_weight > 0,
            options=p.option_weight > 0,
            frames=p.frame_weight > 0,
        ),
        callbacks=[*(callbacks or []), budget],
    )
    run = run_trainer(trainer, p, processor, model)
    samples = run.pop("steps_done") * p.batch_size * p.grad_accum * world
    return SFTResult(
        **run,
        samples_per_second=samples / max(run["train_seconds"], 1e-9),
        parameters={**count_parameters(model), "backend": backend, "mode": p.mode},
        stopped_by_budget=budget.stopped,
        cooldown=budget.summary(),
        **{
            h: _head_loss(run["log_history"], f"{h}_loss", w)
            for h, w in zip(HEADS, weights, strict=True)
        },
    )


def _head_loss(log_history: list[dict], key: str, weight: float) -> dict | None:
    """An auxiliary head loss's weight and its first and last logged values (None if unlogged)."""
    logged = [h[key] for h in log_history if key in h]
    return {"weight": weight, "first": logged[0], "last": logged[-1]} if logged else None


def loss_curve(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, training loss) pairs of a run's log."""
    return [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
