"""The training target's forms, for the ablation of the paper's claims: what a row asks and teaches.

- ``metric``: the paper's target (the dataset's): the question's objects as a metric map, the
  think over it, the answer;
- ``grid``: the same objects as cells of an n x n grid over the room (VSI-Bench's convention,
  n = 10), the think over the cells' centers, the answer the grid implies (no size: a size
  question's answer from a grid is 0; what the grid loses);
- ``no_map``: the metric target's think and answer, without the map;
- ``answer_only``: the metric target's answer alone.

Each form has its own instruction (:data:`~v2lo_utils.prompting.FORM_INSTRUCTIONS`): a row's
prompt asks for what the model was trained to write, in training and in evaluation.
"""

from __future__ import annotations

from .cogmap import CogMap
from .errors import DataError
from .prompting import INSTRUCTION, form_instruction
from .questions import Question, make_grid_target

FORMS = ("metric", "grid", "no_map", "answer_only")


def _part(target: str, tag: str, row: dict) -> str:
    """``<tag>...</tag>`` of a metric target and what follows it; DataError when absent."""
    start = target.find(f"<{tag}>")
    if start < 0 or f"</{tag}>" not in target[start:]:
        raise DataError(f"row {row.get('id')}: field 'target': no <{tag}>...</{tag}> in it")
    return target[start:]


def form_target(row: dict, form: str, grid: int = 10) -> str:
    """The row's target in ``form``; the no-map and answer-only forms keep the metric target's
    think and answer as they are."""
    if form == "metric":
        return row["target"]
    if form == "grid":
        q = Question(row["task"], row["question"], row["answer"], row["params"])
        extent = tuple(row["map_extent"])
        return make_grid_target(q, CogMap.from_json(row["map"]), extent, grid)  # type: ignore[arg-type]
    if form == "no_map":
        return _part(row["target"], "think", row)
    if form == "answer_only":
        return _part(row["target"], "answer", row)
    raise ValueError(f"unknown target form {form!r}; known: {', '.join(FORMS)}")


def form_prompt(row: dict, form: str, grid: int = 10) -> str:
    """The row's prompt with the instruction of ``form`` in place of the dataset's."""
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.startswith(INSTRUCTION):
        raise DataError(
            f"row {row.get('id')}: field 'prompt': does not start with the dataset's instruction, "
            "so its form's instruction cannot replace it"
        )
    return form_instruction(form, grid) + prompt[len(INSTRUCTION) :]


def form_row(row: dict, form: str, grid: int = 10) -> dict:
    """A copy of a dataset or benchmark row in ``form``: its prompt asks for that form, and its
    target (where it has one) is in that form."""
    if form not in FORMS:
        raise ValueError(f"unknown target form {form!r}; known: {', '.join(FORMS)}")
    out = {**row, "prompt": form_prompt(row, form, grid)}
    if "target" in row:
        out["target"] = form_target(row, form, grid)
    return out
