"""The think probe: can a model's language part learn the think when it is given the exact map?

Text only, no frames: each row's prompt followed by its target map (the 0.1 m rendering of the
exact boxes) is the context, and the think and answer are what the model learns to write. A
model that fails here cannot compute answers from maps it writes itself, however well it sees:
the probe separates reasoning from seeing (README, "the think probe"). ``form`` "answer" drops
the think (the answer straight after the map), the control that the think's steps help.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .cogmap import last_tag, parse_map
from .questions import DIRECTIONS, THINK_STEPS, think_steps
from .scoring import score_answer
from .training import learning_rate_factor

FORMS = ("think", "answer")


@dataclass(frozen=True)
class ProbeRow:
    """One training row as the probe uses it: ``context`` (prompt and exact map) and
    ``target`` (think and answer, in ``form``)."""

    row: dict
    context: str
    target: str


def probe_rows(
    rows: Sequence[dict], form: str = "think", tasks: Sequence[str] = DIRECTIONS
) -> list[ProbeRow]:
    """The rows of ``tasks`` as probe rows: the prompt, a newline and the target's map section
    as context; the target's think and answer (``form`` "think") or an empty think and the
    answer ("answer") as target."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    out = []
    for row in rows:
        if row["task"] not in tasks:
            continue
        head, sep, rest = row["target"].partition("</map>")
        if not sep:
            raise ValueError(f"row {row.get('id')!r}: target has no </map>")
        think = rest if form == "think" else f"<think></think><answer>{row['answer']}</answer>"
        out.append(ProbeRow(row, f"{row['prompt']}\n{head}{sep}", think))
    return out


def _encode(tokenizer, pr: ProbeRow) -> tuple[list[int], list[int]]:
    ctx = tokenizer(pr.context, add_special_tokens=False).input_ids
    target = tokenizer(pr.target, add_special_tokens=False).input_ids
    return ctx, [*target, tokenizer.eos_token_id]


def train_probe(
    model,
    tokenizer,
    rows: Sequence[ProbeRow],
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    warmup: int = 50,
    cooldown: float = 0.3,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` (in place) for ``steps`` AdamW steps of ``batch_size`` random rows, the
    loss on the target's tokens only; the rate warms up over ``warmup`` steps and falls linearly
    to 0 over the last ``cooldown`` share (:func:`~v2lo_utils.training.learning_rate_factor`,
    as the demo's SFT). Returns the loss per step."""
    import torch
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    torch.manual_seed(seed)
    encoded = [_encode(tokenizer, r) for r in rows]
    pad = tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in tqdm(range(steps), desc="think probe", mininterval=5):
        batch = rng.sample(encoded, min(batch_size, len(encoded)))
        length = max(len(a) + len(b) for a, b in batch)
        ids = torch.full((len(batch), length), pad)
        labels = torch.full((len(batch), length), -100)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for i, (a, b) in enumerate(batch):
            ids[i, : len(a) + len(b)] = torch.tensor(a + b)
            labels[i, len(a) : len(a) + len(b)] = torch.tensor(b)
            mask[i, : len(a) + len(b)] = 1
        scale = min(1.0, (step + 1) / max(1, warmup)) * learning_rate_factor(step / steps, cooldown)
        for group in opt.param_groups:
            group["lr"] = lr * scale
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def generate_probe(
    model, tokenizer, rows: Sequence[ProbeRow], max_new_tokens: int = 160, batch_size: int = 32
) -> list[str]:
    """Greedy completions (think and answer) after each row's context, left-padded batches."""
    import torch

    model.eval()
    pad = tokenizer.pad_token_id
    out: list[str] = []
    for start in range(0, len(rows), batch_size):
        ctxs = [_encode(tokenizer, r)[0] for r in rows[start : start + batch_size]]
        length = max(map(len, ctxs))
        ids = torch.tensor([[pad] * (length - len(c)) + c for c in ctxs])
        mask = torch.tensor([[0] * (length - len(c)) + [1] * len(c) for c in ctxs])
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        out += tokenizer.batch_decode(gen[:, length:], skip_special_tokens=True)
    return out


def score_probe(rows: Sequence[ProbeRow], completions: Sequence[str]) -> dict[str, dict]:
    """Per task: ``n``, the mean QVS-Bench ``score`` of the answers, and ``steps``: for each step
    of a direction think (:data:`~v2lo_utils.questions.THINK_STEPS`), the share of the thinks in
    the targets' form whose step follows from what comes before it, judged against the exact map
    the context gave (:func:`~v2lo_utils.questions.think_steps`); None where no think is in that
    form (other tasks, the "answer" form)."""
    if len(rows) != len(completions):
        raise ValueError(f"{len(rows)} rows but {len(completions)} completions")
    by_task: dict[str, dict] = {}
    for pr, text in zip(rows, completions, strict=True):
        row = pr.row
        cell = by_task.setdefault(row["task"], {"n": 0, "score": 0.0, "judged": 0, "steps": {}})
        cell["n"] += 1
        cell["score"] += score_answer(row["task"], text, row["answer"]).score
        cogmap = parse_map(pr.context.rsplit("<map>", 1)[1].split("</map>")[0])
        steps = think_steps(row["task"], row["params"], last_tag(text, "think") or "", cogmap)
        if steps:
            cell["judged"] += 1
            for k, ok in steps.items():
                if ok is not None:
                    cell["steps"][k] = cell["steps"].get(k, 0) + int(ok)
    return {
        task: {
            "n": c["n"],
            "score": c["score"] / c["n"],
            "steps": {k: c["steps"][k] / c["judged"] for k in THINK_STEPS if k in c["steps"]}
            if c["judged"]
            else None,
        }
        for task, c in by_task.items()
    }
