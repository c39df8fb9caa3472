"""Dataset rows -> the interchange formats the field trains with (spec section 5).

- ms-swift SFT: {"messages": [user "<image>"*k + prompt, assistant target], "images": [...]}
- EasyR1 RL: {"question": "<image>"*k + prompt, "answer": ..., "image_path": [...]}
- TRL SFT: {"messages": [user content parts (k images, then text), assistant text], "images": [...]}
- TRL prompt/completion (what this project's SFT trains on: loss on the completion only):
  {"prompt": [user message], "completion": [assistant message], "images": [...]}
- TRL GRPO: {"prompt": [user message], "images": [...], plus the columns rewards read:
  answer, task, map, params}

Image paths are absolute unless ``relative_to`` is given. ``grid=N`` swaps every target for its
N x N grid-map variant.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .cogmap import CogMap
from .prompting import tagged_prompt, user_message
from .questions import Question, make_grid_target
from .schema import check_dataset_row

FORMATS = ("ms-swift", "easyr1", "trl-sft", "trl-prompt-completion", "trl-grpo")


def _paths(row: dict, root: Path, relative_to: Path | None) -> list[str]:
    out = []
    for p in row["frames"]:
        full = (root / p).resolve()
        out.append(str(os.path.relpath(full, relative_to) if relative_to else full))
    return out


def target_of(row: dict, grid: int | None = None) -> str:
    """The row's target, or its grid-map variant over the row's map extent."""
    if not grid:
        return row["target"]
    q = Question(row["task"], row["question"], row["answer"], row["params"])
    return make_grid_target(q, CogMap.from_json(row["map"]), tuple(row["map_extent"]), grid)


def to_ms_swift(row: dict, images: list[str], target: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": tagged_prompt(row["prompt"], len(images))},
            {"role": "assistant", "content": target},
        ],
        "images": images,
    }


def to_easyr1(row: dict, images: list[str], target: str) -> dict:
    return {
        "question": tagged_prompt(row["prompt"], len(images)),
        "answer": row["answer"],
        "image_path": images,
        "task": row["task"],
    }


def _assistant(target: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": target}]}


def to_trl_sft(row: dict, images: list[str], target: str) -> dict:
    return {
        "messages": [user_message(row["prompt"], len(images)), _assistant(target)],
        "images": images,
    }


def to_trl_prompt_completion(row: dict, images: list[str], target: str) -> dict:
    """Conversational prompt/completion: TRL's SFTTrainer puts the loss on the completion only,
    which is how this project's SFT trains (with ``messages`` it trains on the prompt too)."""
    return {
        "prompt": [user_message(row["prompt"], len(images))],
        "completion": [_assistant(target)],
        "images": images,
    }


def to_trl_grpo(row: dict, images: list[str], target: str) -> dict:
    return {
        "prompt": [user_message(row["prompt"], len(images))],
        "images": images,
        "answer": row["answer"],
        "task": row["task"],
        "map": row["map"],
        "params": row["params"],
        "id": row["id"],
    }


CONVERTERS: dict[str, Callable[[dict, list[str], str], dict]] = {
    "ms-swift": to_ms_swift,
    "easyr1": to_easyr1,
    "trl-sft": to_trl_sft,
    "trl-prompt-completion": to_trl_prompt_completion,
    "trl-grpo": to_trl_grpo,
}


# The dataset fields each format reads (a grid export also reads the map and its extent).
FIELDS: dict[str, tuple[str, ...]] = {
    "ms-swift": ("prompt", "frames", "target"),
    "easyr1": ("prompt", "frames", "answer", "task"),
    "trl-sft": ("prompt", "frames", "target"),
    "trl-prompt-completion": ("prompt", "frames", "target"),
    "trl-grpo": ("id", "prompt", "frames", "answer", "task", "map", "params"),
}
GRID_FIELDS = ("task", "question", "answer", "params", "map", "map_extent")


def trl_dataset(rows: list[dict]):
    """A ``datasets.Dataset`` of exported TRL rows whose ``images`` column is an Image feature:
    the frame paths decode to RGB PIL images on access, as TRL's trainers (and their vLLM path,
    which cannot take a path string) want them. Also ``load_dataset("json", ...)`` of an export,
    then ``.cast_column("images", List(Image(mode="RGB")))``."""
    from datasets import Dataset, Image, List

    return Dataset.from_list(rows).cast_column("images", List(Image(mode="RGB")))


def export_rows(
    rows: Iterable[dict],
    fmt: str,
    root: str | Path,
    grid: int | None = None,
    relative_to: str | Path | None = None,
    source: str | Path = "dataset rows",
) -> list[dict]:
    """Convert dataset rows (frames relative to ``root``) to format ``fmt``. Every row is checked
    first (:func:`~v2lo_utils.schema.check_dataset_row`: the fields the format reads, frames a
    list of paths inside ``root``): a bad row raises DataError naming ``source``, row and field,
    before anything is written."""
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rows = list(rows)
    fields = tuple(dict.fromkeys(FIELDS[fmt] + (GRID_FIELDS if grid else ())))
    for i, r in enumerate(rows, start=1):
        check_dataset_row(r, source, i, fields)
    root_p = Path(root)
    rel = Path(relative_to).resolve() if relative_to is not None else None
    convert = CONVERTERS[fmt]
    return [convert(r, _paths(r, root_p, rel), target_of(r, grid)) for r in rows]
