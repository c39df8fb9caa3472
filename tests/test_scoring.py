"""Benchmark scores of spec section 3: extraction, MRA, multiple choice, map metrics."""

import math

import numpy as np
import pytest

from v2lo_utils.cogmap import CogMap
from v2lo_utils.scoring import (
    MRA_THETAS,
    extract_choice,
    extract_number,
    match_maps,
    mc_accuracy,
    mra,
    named_option,
    score_answer,
)


def test_thresholds_are_vsi_benchs():
    assert tuple(np.linspace(0.5, 0.95, 10).tolist()) == MRA_THETAS


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (2.0, 2.0, 1.0),
        (2.1, 2.0, 1.0),  # 5% off: within every threshold (<=)
        (2.2, 2.0, 0.9),  # 10%: fails only theta = 0.95
        (3.0, 2.0, 0.1),  # 50%: passes only theta = 0.5
        (3.1, 2.0, 0.0),
        (1.0, 2.0, 0.1),
        (0.0, 2.0, 0.0),
        (0.3, 0.0, 0.5),  # gt == 0: absolute error 0.3 <= 1 - theta for theta <= 0.7
        (0.0, 0.0, 1.0),
        (float("nan"), 2.0, 0.0),
        (float("inf"), 2.0, 0.0),
    ],
)
def test_mra(pred, gt, expected):
    assert mra(pred, gt) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("completion", "letter"),
    [
        ("<answer>D</answer>", "D"),
        ("<answer> d </answer>", "D"),
        ("<answer>(B) sofa</answer>", "B"),
        ("<answer>C. Left-Front</answer>", "C"),
        ("<answer>A</answer> then <answer>B</answer>", "B"),  # the last answer counts
        ("<answer>Dogbed</answer>", None),  # a word, not a letter
        ("<answer></answer>", None),
        ("D", None),  # no answer tag
    ],
)
def test_extract_choice(completion, letter):
    assert extract_choice(completion) == letter


@pytest.mark.parametrize(
    ("completion", "number"),
    [
        ("<answer>2.5</answer>", 2.5),
        ("<answer>about 3 meters, maybe 4</answer>", 3.0),
        ("<answer>-1e2</answer>", -100.0),
        ("<answer>.5 m</answer>", 0.5),
        ("<answer>1e999</answer>", None),
        ("<answer>three</answer>", None),
        ("no tags 2.5", None),
    ],
)
def test_extract_number(completion, number):
    assert extract_number(completion) == number


def test_score_answer_counts_failures():
    assert score_answer("relative_direction", "<answer>b</answer>", "B").score == 1.0
    assert score_answer("relative_direction", "<answer>A</answer>", "B").score == 0.0
    bad = score_answer("relative_direction", "<answer>?</answer>", "B")
    assert bad.score == 0.0 and bad.failed
    assert score_answer("min_distance", "<answer>2.2</answer>", "2.00").score == pytest.approx(0.9)
    bad = score_answer("object_count", "garbage", "3")
    assert bad.failed and bad.score == 0.0
    assert mc_accuracy(None, "A") == 0.0 and mc_accuracy(" a", "A") == 1.0


def test_map_matching_by_name():
    gt = CogMap.from_boxes(
        [("chair", (0, 0, 1, 1)), ("chair", (4, 0, 5, 1)), ("sofa", (0, 3, 2, 4))]
    )
    pred = CogMap.from_boxes(
        [("chair", (4.5, 0, 5.5, 1)), ("Chair", (0, 0, 1, 1)), ("lamp", (9, 9, 9.5, 9.5))]
    )
    m = match_maps(pred, gt)
    assert sorted(m.pairs) == [(0, 1), (1, 0)]  # nearest same-name boxes, one to one
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.mean_center_error == pytest.approx(0.25)
    assert m.mean_iou == pytest.approx((1 / 3 + 1.0) / 2)
    assert m.quality == pytest.approx((1 / 3 + 1.0) / 3)
    assert m.placement() == pytest.approx((math.exp(-0.5) + 1.0) / 3)  # the lamp counts against
    assert m.placement(scale_m=0.5) == pytest.approx((math.exp(-1.0) + 1.0) / 3)
    s = m.summary()
    assert s["matched"] == 2 and s["n_gt"] == 3


def test_map_metrics_edge_cases():
    gt = CogMap.from_boxes([("sofa", (0, 0, 1, 1))])
    empty = match_maps(CogMap(), gt)
    assert empty.recall == 0.0 and empty.precision == 0.0 and empty.mean_center_error is None
    assert match_maps(gt, gt).quality == 1.0 and match_maps(gt, gt).f1 == 1.0
    assert match_maps(gt, gt).placement() == 1.0 and empty.placement() == 0.0
    assert match_maps(CogMap(), CogMap()).quality == 1.0


DIRECTIONS = ["A. Left-Back", "B. Right-Front", "C. Right-Back", "D. Left-Front"]
NAMES = ["A. table", "B. diningtable", "C. sofa", "D. lamp"]


@pytest.mark.parametrize(
    "completion, options, letter",
    [
        ("<think>v.r > 0. The box is Right-Back of the sofa: option A.</think>", DIRECTIONS, "C"),
        (
            "<think>Left-Front? no. It is Left-Back: option</think><answer>D</answer>",
            DIRECTIONS,
            "A",
        ),
        # the last named before the final 'option'; the longer name on a tie
        ("<think>table 1 m, diningtable 2 m. Nearest: diningtable, option C.</think>", NAMES, "B"),
        ("<think>Nearest: table, option B. (option)</think>", NAMES, "A"),
        ("<think>no option names here</think>", DIRECTIONS, None),
        ("<answer>A</answer>", DIRECTIONS, None),  # no think
        (None, DIRECTIONS, None),
    ],
)
def test_named_option_is_the_option_the_think_names_last(completion, options, letter):
    assert named_option(completion, options) == letter
