"""The think probe: its rows carry the exact map, its scores agree with known completions, and a
few steps train and generate on the tiny preset."""

import math
import re

import pytest

from v2lo_utils.dataset import Dataset
from v2lo_utils.questions import DIRECTIONS, LETTERS
from v2lo_utils.thinkprobe import generate_probe, probe_rows, score_probe, train_probe


@pytest.fixture(scope="module")
def rows(tiny_workspace):
    return Dataset.load(tiny_workspace / "data").rows["train"]


def test_rows_give_the_exact_map_and_learn_the_think(rows):
    probe = probe_rows(rows)
    assert probe and {p.row["task"] for p in probe} <= set(DIRECTIONS)
    for p in probe:
        head, _, rest = p.row["target"].partition("</map>")
        assert p.context.startswith(p.row["prompt"]) and p.context.endswith(head + "</map>")
        assert p.target == rest and p.target.startswith("<think>")
    direct = probe_rows(rows, "answer", tasks=("object_count",))
    assert direct and all(
        p.target == f"<think></think><answer>{p.row['answer']}</answer>" for p in direct
    )
    with pytest.raises(ValueError, match="form"):
        probe_rows(rows, "map")


def test_scores_agree_with_known_completions(rows):
    probe = probe_rows(rows)
    gold = score_probe(probe, [p.target for p in probe])
    assert set(gold) == {p.row["task"] for p in probe}
    for cell in gold.values():
        assert cell["score"] == 1.0 and cell["steps"] and set(cell["steps"].values()) == {1.0}

    def other_letter(text):  # the think's and the answer's letter both moved one on
        return re.sub(
            r"(option |<answer>)([A-D])",
            lambda m: m[1] + LETTERS[(LETTERS.index(m[2]) + 1) % 4],
            text,
        )

    wrong = score_probe(probe, [other_letter(p.target) for p in probe])
    for cell in wrong.values():
        assert cell["score"] == 0.0 and cell["steps"]["option"] == 0.0
        assert cell["steps"]["quadrant"] == 1.0  # the steps before the letter still hold
    with pytest.raises(ValueError, match="completions"):
        score_probe(probe, [])


def test_trains_and_generates_on_the_tiny_preset(tiny_workspace, rows):
    from v2lo_utils.models import load_model

    loaded = load_model(tiny_workspace / "models" / "tiny")
    tok = loaded.processor.tokenizer
    probe = probe_rows(rows)[:4]
    losses = train_probe(loaded.model, tok, probe, steps=3, batch_size=2, warmup=1)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    texts = generate_probe(loaded.model, tok, probe[:3], max_new_tokens=6, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert set(score_probe(probe[:3], texts)) <= set(DIRECTIONS)
