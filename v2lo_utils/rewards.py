"""RL rewards: the paper's EasyR1 reward, and the same scores as TRL reward functions.

``compute_score`` equals the paper's recipe (spec section 3) on every string response of up to
``MAX_COMPLETION_CHARS`` characters, in time linear in its length: normalise tags, format = full
match of map/think/answer, accuracy from the FIRST answer (relative-error thresholds 0.50 ... 0.05
when both sides are numbers, else case-insensitive equality), overall = (1 - format_weight) *
accuracy + format_weight * format. A response that is not a string, or is longer than the cap,
scores 0; a ground truth of None is an error (the paper's code would give the answer "None" full
marks).

TRL reward functions take ``completions`` (strings, or message lists) and dataset columns as
keyword arguments, and return one float per completion.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Sequence

from .cogmap import MAX_COMPLETION_CHARS, CogMap, format_match, normalize_tags, parse_response
from .scoring import match_maps

# np.linspace(0.50, 0.05, 10), computed the same way (i * step + start, exact end point).
_STEP = (0.05 - 0.50) / 9
REWARD_THRESHOLDS = (*(i * _STEP + 0.50 for i in range(9)), 0.05)
_SORTED_THRESHOLDS = sorted(REWARD_THRESHOLDS)
FORMAT_WEIGHT = 0.1


def _first_answer(normalised: str) -> str | None:
    """Content of the first <answer>...</answer> (what re.search with a lazy group finds)."""
    start = normalised.find("<answer>")
    if start < 0:
        return None
    end = normalised.find("</answer>", start + 8)
    return None if end < 0 else normalised[start + 8 : end].strip()


def _accuracy(answer: str | None, ground_truth: object) -> float:
    if answer is None:
        return 0.0
    try:
        gt = float(ground_truth)  # type: ignore[arg-type]
        pred = float(answer)
    except (ValueError, TypeError):
        return 1.0 if answer.lower() == str(ground_truth).lower() else 0.0
    err = abs(pred - gt) if gt == 0 else abs(pred - gt) / abs(gt)
    if err != err:  # nan: no threshold passes
        return 0.0
    # the thresholds err is <= to: all but those below it (no arithmetic: exact)
    return (10 - bisect_left(_SORTED_THRESHOLDS, err)) / 10


def paper_score(response: str, ground_truth: object, format_weight: float = FORMAT_WEIGHT) -> dict:
    """The paper's reward for one response: {"overall", "format", "accuracy"}."""
    if ground_truth is None:
        raise ValueError("ground_truth is None: the row has no answer to reward against")
    if not isinstance(response, str) or len(response) > MAX_COMPLETION_CHARS:
        return {"overall": 0.0, "format": 0.0, "accuracy": 0.0}
    normalised = normalize_tags(response)
    fmt = 1.0 if format_match(normalised.strip()) else 0.0
    acc = _accuracy(_first_answer(normalised), ground_truth)
    return {
        "overall": (1 - format_weight) * acc + format_weight * fmt,
        "format": fmt,
        "accuracy": acc,
    }


def compute_score(reward_inputs: list[dict], format_weight: float = FORMAT_WEIGHT) -> list[dict]:
    """EasyR1 batch reward: each input has "response" and "ground_truth"."""
    if not isinstance(reward_inputs, list):
        raise ValueError(
            "compute_score takes a list of {'response', 'ground_truth'} (reward_type=batch)"
        )
    out = []
    for i, r in enumerate(reward_inputs):
        if not isinstance(r, dict) or "response" not in r or "ground_truth" not in r:
            raise ValueError(
                f"reward_inputs[{i}]: expected a dict with 'response' and 'ground_truth'"
            )
        try:
            out.append(paper_score(r["response"], r["ground_truth"], format_weight))
        except ValueError as err:
            raise ValueError(f"reward_inputs[{i}]: {err}") from err
    return out


# ---------------------------------------------------------------------------------------------
# TRL reward functions


def completion_text(completion: object) -> str:
    """The text of a TRL completion: a string, or a list of messages whose content is a string
    or a list of {"type": "text", "text": ...} parts (the assistant turns are joined)."""
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, (list, tuple)):
        return ""  # scores 0: not a completion
    parts: list[str] = []
    for msg in completion:
        content = msg.get("content", "") if isinstance(msg, dict) else msg
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "".join(parts)


def format_reward(completions: Sequence, **kwargs) -> list[float]:
    """1.0 when the completion is exactly <map>, <think>, <answer> (the paper's format rule)."""
    return [paper_score(completion_text(c), "")["format"] for c in completions]


def accuracy_reward(completions: Sequence, answer: Sequence, **kwargs) -> list[float]:
    """The paper's answer accuracy against the dataset's ``answer`` column."""
    return [
        paper_score(completion_text(c), gt)["accuracy"]
        for c, gt in zip(completions, answer, strict=True)
    ]


def paper_reward(completions: Sequence, answer: Sequence, **kwargs) -> list[float]:
    """0.9 * accuracy + 0.1 * format in one function (the paper's overall reward)."""
    return [
        paper_score(completion_text(c), gt)["overall"]
        for c, gt in zip(completions, answer, strict=True)
    ]


def _gt_map(raw: object) -> CogMap:
    if isinstance(raw, CogMap):
        return raw
    if isinstance(raw, str):
        raw = json.loads(raw)
    return CogMap.from_json(raw, where="map column")


def _map_scores(completions: Sequence, maps: Sequence, score) -> list[float]:
    """``score`` of each completion's parsed map matched to its ground truth; 0 without a map."""
    out = []
    for c, gt in zip(completions, maps, strict=True):
        pred = parse_response(completion_text(c)).cogmap
        out.append(0.0 if pred is None else score(match_maps(pred, _gt_map(gt))))
    return out


def map_reward(completions: Sequence, map: Sequence, **kwargs) -> list[float]:
    """Map quality against the dataset's ``map`` column: summed IoU of name-matched boxes over
    max(#predicted, #true) objects; 0 when the completion has no parseable map."""
    return _map_scores(completions, map, lambda m: m.quality)


def placement_reward(completions: Sequence, map: Sequence, **kwargs) -> list[float]:
    """Map placement against the dataset's ``map`` column (the project's map-aware reward, not the
    paper's): summed exp(-center error / 1 m) of name-matched objects over max(#predicted,
    #true), so naming the right objects and moving them closer both pay; 0 when no map parses."""
    return _map_scores(completions, map, lambda m: m.placement())


PAPER_REWARD_FUNCS = (accuracy_reward, format_reward)
PAPER_REWARD_WEIGHTS = (1 - FORMAT_WEIGHT, FORMAT_WEIGHT)

__all__ = [
    "FORMAT_WEIGHT",
    "PAPER_REWARD_FUNCS",
    "PAPER_REWARD_WEIGHTS",
    "REWARD_THRESHOLDS",
    "accuracy_reward",
    "completion_text",
    "compute_score",
    "format_reward",
    "map_reward",
    "paper_reward",
    "paper_score",
    "placement_reward",
]
