"""The paper's reward (spec section 3) and the TRL reward functions built on the same scores."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paper_reward_reference import reference_score

from v2lo_utils.rewards import (
    PAPER_REWARD_FUNCS,
    PAPER_REWARD_WEIGHTS,
    REWARD_THRESHOLDS,
    accuracy_reward,
    completion_text,
    compute_score,
    format_reward,
    map_reward,
    paper_reward,
    placement_reward,
)

GOOD = '<map>[{"object_name": "sofa", "bbox": [0.0, 0.0, 2.0, 1.0]}]</map><think>t</think><answer>{}</answer>'


def good(answer):
    return GOOD.replace("{}", answer)


def score(response, gt):
    return compute_score([{"response": response, "ground_truth": gt}])[0]


def test_thresholds_are_the_originals():
    assert tuple(np.linspace(0.50, 0.05, 10).tolist()) == REWARD_THRESHOLDS


@pytest.mark.parametrize(
    ("answer", "gt", "accuracy"),
    [
        ("B", "B", 1.0),
        ("b", "B", 1.0),  # case-insensitive
        ("B.", "B", 0.0),  # no letter extraction in the paper's reward
        ("2.0", "2", 1.0),
        ("2.05", "2", 1.0),  # 2.5%
        ("2.15", "2", 0.9),  # 7.5%: fails only 0.05
        ("2.52", "2", 0.5),  # 26%: passes 0.50 ... 0.30
        ("3", "2", 0.1),
        ("3.2", "2", 0.0),
        ("0.3", "0", 0.5),  # gt == 0: absolute error
        ("two", "2", 0.0),  # not a number: string equality
        ("1_0", "10", 1.0),  # Python's float() accepts it
        ("nan", "2", 0.0),
    ],
)
def test_accuracy_rule(answer, gt, accuracy):
    s = score(good(answer), gt)
    assert s["accuracy"] == pytest.approx(accuracy)
    assert s["format"] == 1.0
    assert s["overall"] == pytest.approx(0.9 * accuracy + 0.1)


def test_format_and_first_answer():
    assert score("<answer>B</answer>", "B") == {"overall": 0.9, "format": 0.0, "accuracy": 1.0}
    # the FIRST answer is scored by the reward (the benchmark reads the last); the lazy format
    # pattern still matches the whole text, as the original's does
    s = score(good("A") + "<answer>B</answer>", "B")
    assert s == {"overall": 0.1, "format": 1.0, "accuracy": 0.0}
    # whitespace around '<', '>' and '/' is removed before anything else
    s = score("< map >m</ map >\n<think>t</think>\n< answer > B < / answer >", "b")
    assert s == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
    assert score("no tags at all", "B") == {"overall": 0.0, "format": 0.0, "accuracy": 0.0}
    assert compute_score([{"response": good("B"), "ground_truth": "B"}], format_weight=0.5)[0][
        "overall"
    ] == pytest.approx(1.0)


def test_compute_score_wants_a_batch():
    with pytest.raises(ValueError, match="list"):
        compute_score({"response": "x", "ground_truth": "y"})


# ---- equal to the paper's recipe on every input ------------------------------------------------

FRAGS = [
    "<",
    ">",
    "/",
    " ",
    "\n",
    "\t",
    "\u00a0",
    "\u2003",
    "\x1c",
    "map",
    "think",
    "answer",
    "<map>",
    "</map>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "< answer >",
    "</ answer>",
    "A",
    "b",
    "2",
    "2.5",
    "3",
    "1",
    "0.5",
    "-0",
    "1e3",
    "nan",
    "inf",
    "_",
    ".",
    "x",
    "é",
]
NUMBERS = ["0", "0.5", "1", "1.1", "1.5", "2", "2.5", "3", "4", "-1", "1e3", "nan", "inf", "B", "b"]
structured = st.tuples(
    st.sampled_from(["", " ", "\n", " < "]),
    st.sampled_from(NUMBERS),
    st.sampled_from(["", "x", "\n"]),
).map(lambda t: f"<map>m</map>{t[0]}<think>t</think><answer>{t[1]}</answer>{t[2]}")
responses = st.one_of(
    st.text(max_size=120), st.lists(st.sampled_from(FRAGS), max_size=40).map("".join), structured
)
truths = st.one_of(
    st.sampled_from(["A", "b", "2", "2.5", "0", "-0", "1e3", "nan", "inf", " 3 ", "1_0", "x", ""]),
    st.sampled_from(NUMBERS),
    st.text(max_size=8),
    st.floats(allow_nan=True),
    st.integers(-5, 5),
)  # None: an error, not a reward (tests/test_hostile_input.py)


@settings(max_examples=3000)
@given(responses, truths, st.sampled_from([0.1, 0.0, 0.5]))
def test_compute_score_equals_the_reference(response, gt, weight):
    ours = compute_score([{"response": response, "ground_truth": gt}], format_weight=weight)[0]
    assert ours == reference_score(response, gt, weight)


def test_compute_score_equals_the_reference_on_real_targets():
    sys.path.insert(0, "bench")
    from bench_core import five_object_responses

    rows = five_object_responses(300)
    assert [reference_score(r["response"], r["ground_truth"]) for r in rows] == compute_score(rows)


# ---- TRL reward functions -------------------------------------------------------------------


def trl_call(func, completions, **columns):
    """Call a reward function the way TRL's GRPOTrainer does."""
    n = len(completions)
    return func(
        prompts=["p"] * n,
        completions=completions,
        completion_ids=[[1, 2]] * n,
        trainer_state=None,
        log_extra=lambda *a: None,
        log_metric=lambda *a: None,
        **columns,
    )


def test_trl_rewards_on_strings_and_messages():
    texts = [good("B"), good("A"), "<answer>B</answer>"]
    messages = [[{"role": "assistant", "content": t}] for t in texts]
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in texts]
    cols = {"answer": ["B"] * 3, "task": ["relative_direction"] * 3, "map": [None] * 3}
    for completions in (texts, messages, parts):
        assert [completion_text(c) for c in completions] == texts
        assert trl_call(format_reward, completions, **cols) == [1.0, 1.0, 0.0]
        assert trl_call(accuracy_reward, completions, **cols) == [1.0, 0.0, 1.0]
        assert trl_call(paper_reward, completions, **cols) == pytest.approx([1.0, 0.1, 0.9])


def test_paper_weights_reproduce_the_overall_reward():
    texts = [good("2.2"), "<answer>2</answer>", "junk"]
    answer = ["2"] * 3
    combined = [
        sum(
            w * f(texts, answer=answer)[i]
            for f, w in zip(PAPER_REWARD_FUNCS, PAPER_REWARD_WEIGHTS, strict=True)
        )
        for i in range(3)
    ]
    assert combined == pytest.approx(
        [
            s["overall"]
            for s in compute_score(
                [{"response": t, "ground_truth": a} for t, a in zip(texts, answer, strict=True)]
            )
        ]
    )


def test_map_reward_reads_the_map_column():
    gt = [
        {"object_name": "sofa", "bbox": [0.0, 0.0, 2.0, 1.0]},
        {"object_name": "tv", "bbox": [3, 3, 4, 3.5]},
    ]
    texts = [good("B"), "<map>nonsense</map>", "no map", GOOD.replace("2.0, 1.0", "1.0, 1.0")]
    got = trl_call(map_reward, texts, answer=["B"] * 4, map=[gt, json.dumps(gt), gt, gt])
    assert got == pytest.approx([0.5, 0.0, 0.0, 0.25])


def test_placement_reward_grades_center_error_and_counts_objects():
    gt = [
        {"object_name": "sofa", "bbox": [0.0, 0.0, 2.0, 1.0]},
        {"object_name": "tv", "bbox": [3, 3, 4, 3.5]},
    ]
    texts = [
        good("B"),  # the sofa exact, no tv: 1 of 2 objects
        GOOD.replace("0.0, 0.0, 2.0, 1.0", "1.0, 0.0, 3.0, 1.0"),  # the sofa 1 m off
        GOOD.replace("0.0, 0.0, 2.0, 1.0", "3.0, 0.0, 5.0, 1.0"),  # 3 m off: IoU 0 either way
        "no map",
    ]
    got = trl_call(placement_reward, texts, answer=["B"] * 4, map=[gt] * 4)
    assert got == pytest.approx([0.5, 0.5 * math.exp(-1), 0.5 * math.exp(-3), 0.0])
    assert trl_call(map_reward, texts[1:3], answer=["B"] * 2, map=[gt] * 2)[1] == 0.0


def test_core_imports_no_torch():
    code = (
        "import sys, v2lo_utils.rewards, v2lo_utils.questions, v2lo_utils.scoring, v2lo_utils.layout, "
        "v2lo_utils.errors, v2lo_utils.schema, v2lo_utils.loaders, v2lo_utils.predictions, "
        "v2lo_utils.cli; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_easyr1_loads_the_reward_by_file_path():
    """As EasyR1's reward manager does: the file executed by path under another module name.
    rewards.py cannot be (relative imports); easyr1_reward.py can, and gives the same scores."""
    import importlib.util

    import v2lo_utils

    def load(path):
        spec = importlib.util.spec_from_file_location("custom_reward_fn", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.compute_score

    folder = Path(v2lo_utils.__file__).parent
    with pytest.raises(ImportError, match="relative import"):
        load(folder / "rewards.py")
    batch = [{"response": "<map>[]</map><think>t</think><answer>B</answer>", "ground_truth": "B",
              "response_length": 12}]  # fmt: skip
    assert load(folder / "easyr1_reward.py")(batch) == compute_score(batch)
