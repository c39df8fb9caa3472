"""Benchmark scores (spec section 3): answer extraction, MRA, multiple-choice accuracy, map metrics.

Lengths are meters in the map frame. Extraction reads the LAST ``<answer>...</answer>``; anything
unparseable scores 0 and counts as an extraction failure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from . import geometry as geo
from .cogmap import MAX_COMPLETION_CHARS, CogMap, last_tag, name_key
from .questions import MC, TASKS

# VSI-Bench: theta in {0.50, 0.55, ..., 0.95}, correct when rel. error <= 1 - theta.
# np.linspace(0.5, 0.95, 10) computed the same way (i * step + start, exact end point).
_STEP = (0.95 - 0.5) / 9
MRA_THETAS = (*(i * _STEP + 0.5 for i in range(9)), 0.95)

_LETTER_RE = re.compile(r"^[\s(\[*'\"]*([A-Za-z])(?![A-Za-z0-9])")
_NUMBER_RE = re.compile(r"[-+\u2212]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def answer_text(completion: str) -> str | None:
    """The stripped content of the last <answer> tag, or None (also for a non-string or a text
    over the parsing cap); linear time."""
    if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
        return None
    found = last_tag(completion, "answer")
    return found.strip() if found is not None else None


def extract_choice(completion: str) -> str | None:
    """The option letter the last answer starts with ('D', '(d)', 'D. sofa' -> 'D'), or None."""
    text = answer_text(completion)
    m = _LETTER_RE.match(text) if text is not None else None
    return m.group(1).upper() if m else None


def finite_number(value: object) -> float | None:
    """``value`` as a finite float (numbers and numeric text, as Python's float() reads them),
    else None; a bool is no number."""
    if isinstance(value, bool):
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def extract_number(completion: str) -> float | None:
    """The number in the last answer, or None: the whole answer read with Python's float() where
    it reads (as the paper's reward reads it, so '1_2' is 12 in both), else its first finite
    numeric literal; a unicode minus (U+2212) is a minus sign, never dropped."""
    text = answer_text(completion)
    if text is None:
        return None
    whole = finite_number(text)
    if whole is not None:
        return whole
    m = _NUMBER_RE.search(text)
    return finite_number(m.group(0).replace("\u2212", "-")) if m else None


def mra(pred: float, gt: float) -> float:
    """Mean relative accuracy over the ten thresholds; absolute error when gt == 0."""
    if not (math.isfinite(pred) and math.isfinite(gt)):
        return 0.0
    err = abs(pred - gt) / abs(gt) if gt != 0 else abs(pred - gt)
    return sum(err <= 1 - t for t in MRA_THETAS) / len(MRA_THETAS)


def mc_accuracy(pred: str | None, gt: str) -> float:
    """1.0 when the option letters agree, ignoring case."""
    return float(pred is not None and pred.strip().upper() == gt.strip().upper())


def extract_answer(kind: str, completion: str) -> str | float | None:
    """What the benchmark reads from a completion: the option letter (multiple choice) or the
    number (numerical), or None when the last answer holds nothing parseable."""
    return extract_choice(completion) if kind == MC else extract_number(completion)


def answer_score(kind: str, got: str | float | None, answer: str) -> float:
    """THE scoring rule of QVS-Bench, in [0, 1]: an extracted letter against the ground-truth
    letter (multiple choice), an extracted number by MRA against the ground-truth number
    (numerical); nothing extracted scores 0. The benchmark, the consistency control and the
    model-free diagnostics all score with it."""
    if kind == MC:
        return mc_accuracy(got if isinstance(got, str) else None, answer)
    return 0.0 if got is None else mra(float(got), float(answer))


def named_option(completion: str, options: list[str]) -> str | None:
    """The letter of the option the last think names: the option ('A. Left-Back') whose text
    occurs last in the think before its final word 'option' (the targets end "...: option D"),
    the longer text on a tie; None without a think or a named option. What the answer should
    repeat when it follows its own reasoning."""
    if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
        return None
    think = last_tag(completion, "think")
    if think is None:
        return None
    head = think.rsplit("option", 1)[0]
    found = []
    for option in options:
        letter, _, text = option.partition(". ")
        if text and (at := head.rfind(text)) >= 0:
            found.append((at + len(text), len(text), letter))
    return max(found)[2] if found else None


@dataclass(frozen=True)
class AnswerScore:
    score: float  # in [0, 1]
    extracted: str | float | None
    failed: bool  # nothing parseable in the answer


def score_answer(task: str, completion: str, gt: str) -> AnswerScore:
    """QVS-Bench score of one completion against the ground-truth answer text."""
    kind = TASKS[task].kind
    got = extract_answer(kind, completion)
    return AnswerScore(answer_score(kind, got, gt), got, got is None)


# ---------------------------------------------------------------------------------------------
# Map quality


PLACEMENT_SCALE_M = 1.0  # m: the center error at which a matched object's placement is 1/e


@dataclass(frozen=True)
class MapMatch:
    """One-to-one matching of a predicted map to the ground truth by object name."""

    pairs: tuple[tuple[int, int], ...]  # (pred index, gt index)
    n_pred: int
    n_gt: int
    center_errors: tuple[float, ...]  # m, per pair
    ious: tuple[float, ...]  # per pair

    @property
    def precision(self) -> float:
        return len(self.pairs) / self.n_pred if self.n_pred else float(self.n_gt == 0)

    @property
    def recall(self) -> float:
        return len(self.pairs) / self.n_gt if self.n_gt else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def mean_center_error(self) -> float | None:
        """Mean centroid distance over matched objects (m); None when nothing matched."""
        return sum(self.center_errors) / len(self.center_errors) if self.pairs else None

    @property
    def mean_iou(self) -> float | None:
        return sum(self.ious) / len(self.ious) if self.pairs else None

    @property
    def quality(self) -> float:
        """Summed IoU of matches over max(n_pred, n_gt): 1 only for a perfect, complete map."""
        denom = max(self.n_pred, self.n_gt)
        return sum(self.ious) / denom if denom else 1.0

    def placement(self, scale_m: float = PLACEMENT_SCALE_M) -> float:
        """Summed exp(-center error / ``scale_m``) of matches over max(n_pred, n_gt): like
        :attr:`quality` 1 only for a perfect, complete map, but graded where boxes miss (IoU 0),
        so a map 1 m off scores above one 3 m off."""
        denom = max(self.n_pred, self.n_gt)
        return sum(math.exp(-e / scale_m) for e in self.center_errors) / denom if denom else 1.0

    def summary(self) -> dict:
        return {
            "n_pred": self.n_pred,
            "n_gt": self.n_gt,
            "matched": len(self.pairs),
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "center_error_m": self.mean_center_error,
            "iou": self.mean_iou,
            "quality": self.quality,
            "placement": self.placement(),
        }


def match_maps(pred: CogMap, gt: CogMap) -> MapMatch:
    """Match objects of the same name one to one, nearest centroids first (greedy)."""
    cands = []
    for i, p in enumerate(pred.objects):
        pk = name_key(p.name)
        for j, g in enumerate(gt.objects):
            if name_key(g.name) == pk:
                cands.append((geo.center_distance(p.bbox, g.bbox), i, j))
    cands.sort()
    used_p: set[int] = set()
    used_g: set[int] = set()
    pairs, errs, ious = [], [], []
    for d, i, j in cands:
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        pairs.append((i, j))
        errs.append(d)
        ious.append(geo.iou(pred.objects[i].bbox, gt.objects[j].bbox))
    return MapMatch(tuple(pairs), len(pred), len(gt), tuple(errs), tuple(ious))
