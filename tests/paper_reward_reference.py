"""A literal, unoptimised reading of the paper's reward (spec section 3), written from the spec's
words with numpy, to check ``v2lo_utils.rewards`` against on any input (and to time it against)."""

from __future__ import annotations

import re

import numpy as np


def reference_score(response: str, ground_truth, format_weight: float = 0.1) -> dict:
    # 1. delete the whitespace on both sides of every '<', '>' and '/'
    response = re.sub(r"\s*(<|>|/)\s*", r"\1", response)
    # 2. format: the (stripped) normalised response fully matches map, think, answer
    pattern = re.compile(r"<map>.*?</map>\s*<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
    fmt = 1.0 if re.fullmatch(pattern, response.strip()) else 0.0
    # 3. the stripped content of the first answer
    m = re.search(r"<answer>(.*?)</answer>", response, re.DOTALL)
    if m is None:
        acc = 0.0
    else:
        answer = m.group(1).strip()
        # 4. numbers: fraction of the thresholds 0.50 ... 0.05 the relative error is <= to
        try:
            gt, pred = float(ground_truth), float(answer)
            err = abs(pred - gt) if gt == 0 else abs(pred - gt) / abs(gt)
            acc = float(np.sum(err <= np.linspace(0.50, 0.05, 10))) / 10
        except (ValueError, TypeError):
            acc = 1.0 if answer.lower() == str(ground_truth).lower() else 0.0
    # 5. overall
    return {
        "overall": (1 - format_weight) * acc + format_weight * fmt,
        "format": fmt,
        "accuracy": acc,
    }
