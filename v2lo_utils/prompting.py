"""The prompt, in one place: the instruction, the user turn's text and messages, frame loading.

A question's user turn is its frames (image parts, or ``<image>`` tags in the text formats),
then :func:`user_prompt`: the instruction and the question with its lettered options. The
dataset builder writes it into each row's ``prompt``; exporters, generation, merge checks and
the presets' tokenizer all read it from here.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .questions import Question

INSTRUCTION = (
    "Frames of a room video. Write the floor boxes of the objects the question names, in meters "
    "(first camera at the origin, x right, y forward), in <map></map>; compute the answer from "
    "them in <think></think>; give the option letter or the number in <answer></answer>."
)
# the instruction of each target form (v2lo_utils.targets): the ablation's variants ask for what
# they were trained to write; "metric" is the paper's (the dataset's prompts)
FORM_INSTRUCTIONS = {
    "metric": INSTRUCTION,
    "grid": (
        "Frames of a room video. Write the cells of the objects the question names, on a "
        "{n} x {n} grid over the room (first camera's frame, x right, y forward), in <map></map>; "
        "compute the answer from the cell centers in <think></think>; give the option letter or "
        "the number in <answer></answer>."
    ),
    "no_map": (
        "Frames of a room video. Compute the answer from where the objects the question names "
        "stand, in meters, in <think></think>; give the option letter or the number in "
        "<answer></answer>."
    ),
    "answer_only": (
        "Frames of a room video. Give the option letter or the number in <answer></answer>."
    ),
}
IMAGE_TAG = "<image>"  # one per frame, in front of the text (ms-swift, EasyR1)


def user_prompt(question: Question) -> str:
    """The user turn's text: the instruction, then the question and its lettered options."""
    return f"{INSTRUCTION}\n{question.prompt()}"


def form_instruction(form: str, grid: int = 10) -> str:
    """The instruction for target form ``form`` (:data:`FORM_INSTRUCTIONS`; ``grid``: cells a side)."""
    if form not in FORM_INSTRUCTIONS:
        raise ValueError(f"unknown target form {form!r}; known: {', '.join(FORM_INSTRUCTIONS)}")
    return FORM_INSTRUCTIONS[form].replace("{n}", str(grid))


def user_message(prompt: str, n_images: int) -> dict:
    """The user turn as a chat message: ``n_images`` image parts, then the prompt."""
    content = [{"type": "image"} for _ in range(n_images)]
    return {"role": "user", "content": [*content, {"type": "text", "text": prompt}]}


def user_messages(row: dict) -> list[dict]:
    """A dataset row's user turn (its frames, then its ``prompt``), as the chat template takes it."""
    return [user_message(row["prompt"], len(row["frames"]))]


def tagged_prompt(prompt: str, n_images: int) -> str:
    """The user turn as one text, with an ``<image>`` tag per frame in front."""
    return IMAGE_TAG * n_images + prompt


def load_image(path: str | Path):
    """One frame as an RGB PIL image (the file is closed again)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def load_frames(row: dict, root: str | Path) -> list:
    """The row's frames (relative to ``root``) as RGB PIL images; a missing file raises DataError
    naming the row and the path."""
    images = []
    for j, f in enumerate(row["frames"]):
        path = Path(root) / f
        if not path.is_file():
            raise DataError(f"row {row.get('id')}: field 'frames[{j}]': missing file {path}")
        images.append(load_image(path))
    return images
