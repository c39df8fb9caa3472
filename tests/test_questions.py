"""Question types of spec section 2: templates, answer geometry, one solve, the well-posedness rules."""

import math
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from v2lo_utils.cogmap import CogMap, parse_response
from v2lo_utils.layout import random_scene_map
from v2lo_utils.questions import (
    DIRECTIONS,
    LETTERS,
    QVS_FRAME_SHARES,
    QVS_TASK_SHARES,
    TASKS,
    Question,
    allocate,
    check_well_posed,
    generate_question,
    make_question,
    make_target,
    relevant_map,
    solve,
    think_steps,
    write_think,
)
from v2lo_utils.rewards import paper_score
from v2lo_utils.scoring import score_answer

QUADS = ["Left-Front", "Right-Front", "Left-Back", "Right-Back"]


def pt(name, x, y, half=0.1):
    """A small square object centred at (x, y)."""
    return (name, (x - half, y - half, x + half, y + half))


def mc(task, objects, **extra):
    return {"objects": objects, "options": QUADS, **extra}


# ---- answer geometry, hand-computed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "c", "d", "expected"),
    [
        ((0, 0), (0, 2), (1, 3), (0, 2), "Right-Front"),  # f = +y, r = +x
        ((0, 0), (0, 2), (-1, 1), (0, 2), "Left-Back"),
        ((0, 0), (2, 0), (1, -1), (0, 0), "Right-Front"),  # f = +x, r = -y
        ((0, 0), (2, 0), (-1, -1), (0, 0), "Right-Back"),
        ((0, 0), (2, 0), (1, 1), (0, 0), "Left-Front"),
    ],
)
def test_vertical_direction(a, b, c, d, expected):
    names = ["sofa", "bed", "desk", "fridge"]
    m = CogMap.from_boxes([pt(n, *p) for n, p in zip(names, [a, b, c, d], strict=True)])
    assert solve("vertical_direction", mc("", names), m) == LETTERS[QUADS.index(expected)]


@pytest.mark.parametrize(
    ("variant", "c", "expected"),
    [
        ("right", (1, 1), "Right-Front"),  # B right of A: r = +x, f = +y
        ("right", (-1, -1), "Left-Back"),
        ("left", (1, 1), "Left-Back"),  # B left of A: r = -x, f = -y
        ("left", (-1, 1), "Right-Back"),
    ],
)
def test_horizontal_direction(variant, c, expected):
    names = ["sofa", "bed", "desk", "fridge"]
    m = CogMap.from_boxes([pt("sofa", 0, 0), pt("bed", 2, 0), pt("desk", *c), pt("fridge", 0, 0.0)])
    params = mc("", names, variant=variant)
    assert solve("horizontal_direction", params, m) == LETTERS[QUADS.index(expected)]


def test_relative_direction_is_the_camera_frame():
    m = CogMap.from_boxes([pt("sofa", -1, 3), pt("bed", 0, 1)])
    assert solve("relative_direction", mc("", ["sofa", "bed"]), m) == "A"  # Left-Front
    assert solve("relative_direction", mc("", ["bed", "sofa"]), m) == "D"  # Right-Back


def test_numerical_answers():
    m = CogMap.from_boxes(
        [("sofa", (0, 0, 1, 1)), ("bed", (4, 5, 5, 6)), ("desk", (0, 0, 2.1, 0.9))]
        + [pt("chair", i, 9) for i in range(3)]
    )
    assert solve("min_distance", {"objects": ["sofa", "bed"]}, m) == "5.00"
    assert solve("object_size", {"objects": ["desk"]}, m) == "2.10"
    assert solve("object_count", {"category": "chair"}, m) == "3"
    assert solve("object_count", {"category": "Chair"}, m) == "3"
    assert solve("object_count", {"category": "lamp"}, m) == "0"


def test_nearest_object():
    m = CogMap.from_boxes(
        [pt("sofa", 0, 0), pt("bed", 0, 4), pt("desk", 3, 0), pt("box", 1, 1), pt("tv", -2, 2)]
    )
    params = {"objects": ["sofa"], "options": ["bed", "desk", "box", "tv"]}
    assert solve("nearest_object", params, m) == "C"


def test_solve_handles_missing_objects_and_unknown_tasks():
    m = CogMap.from_boxes([pt("sofa", 0, 0)])
    assert solve("min_distance", {"objects": ["sofa", "bed"]}, m) is None
    assert solve("vertical_direction", mc("", ["sofa", "bed", "desk", "tv"]), m) is None
    with pytest.raises(ValueError, match="unknown task"):
        solve("height", {}, m)


# ---- templates, options, shares ----------------------------------------------------------------


def test_templates_are_the_benchmarks():
    m = CogMap.from_boxes(
        [pt("sofa", 0, 0), pt("bed", 0, 4), pt("desk", 3, 0), pt("box", 1, 1), pt("tv", -2, 2)]
    )
    rng = random.Random(0)
    q = make_question("vertical_direction", ["sofa", "bed", "desk", "box"], m, rng)
    assert q.text == (
        "Considering the vector from sofa to bed as the 'forward/backward' direction, "
        "how is the desk positioned relative to the box?"
    )
    q = make_question(
        "horizontal_direction", ["sofa", "bed", "desk", "box"], m, rng, variant="left"
    )
    assert (
        q.text
        == "If the bed is directly to the left of the sofa, what is the direction of the desk from the box?"
    )
    assert q.params["variant"] == "left"
    q = make_question("min_distance", ["sofa", "bed"], m, rng)
    assert q.text == (
        "Measuring from the closest points between the two objects, what is the distance between "
        "the sofa and the bed in meters?"
    )
    q = make_question("object_size", ["tv"], m, rng)
    assert q.text == "What is the maximum dimension (either width or length) of the tv in meters?"
    q = make_question("relative_direction", ["sofa", "bed"], m, rng)
    assert (
        q.text == "From the camera's perspective, what is the direction of the sofa from the bed?"
    )
    q = make_question("object_count", ["box"], m, rng)
    assert q.text == "How many 'box' objects are there in this scene?" and q.answer == "1"
    q = make_question("nearest_object", ["sofa"], m, rng, option_pool=["bed", "desk", "box", "tv"])
    assert q.text.startswith("Considering the center point of the sofa as a reference point")
    assert q.options[LETTERS.index(q.answer)] == "box"
    assert q.prompt().splitlines()[1:] == [
        f"{L}. {o}" for L, o in zip(LETTERS, q.options, strict=True)
    ]
    with pytest.raises(ValueError, match="variant"):
        make_question("horizontal_direction", ["sofa", "bed", "desk", "box"], m, rng)


def test_options_are_a_seeded_shuffle():
    m = CogMap.from_boxes([pt("sofa", -1, 3), pt("bed", 0, 1)])
    orders = {
        tuple(make_question("relative_direction", ["sofa", "bed"], m, random.Random(s)).options)
        for s in range(20)
    }
    assert len(orders) > 3 and all(sorted(o) == sorted(QUADS) for o in orders)
    same = [
        make_question("relative_direction", ["sofa", "bed"], m, random.Random(7)) for _ in range(2)
    ]
    assert same[0] == same[1]


def test_qvs_shares_for_500_questions():
    assert set(QVS_TASK_SHARES) == set(TASKS) - {"nearest_object"}
    tasks = allocate(500, QVS_TASK_SHARES)
    assert tasks == {
        "vertical_direction": 126,
        "horizontal_direction": 126,
        "min_distance": 63,
        "object_size": 59,
        "relative_direction": 63,
        "object_count": 63,
    }
    assert allocate(500, QVS_FRAME_SHARES) == {1: 101, 4: 101, 8: 101, 12: 101, 16: 96}
    assert sum(allocate(37, QVS_TASK_SHARES).values()) == 37


# ---- well-posedness ------------------------------------------------------------------------------


def q_of(task, params, m):
    return Question(task, "", solve(task, params, m), params)


def test_well_posed_rejects_duplicates_and_invisible():
    m = CogMap.from_boxes([pt("sofa", -1, 3), pt("bed", 0, 1), pt("bed", 3, 3)])
    q = q_of("relative_direction", mc("", ["sofa", "bed"]), m)
    assert any("unique" in p for p in check_well_posed(q, m))
    m = CogMap.from_boxes([pt("sofa", -1, 3), pt("bed", 0, 1)])
    q = q_of("relative_direction", mc("", ["sofa", "bed"]), m)
    assert check_well_posed(q, m) == []
    assert any("visible" in p for p in check_well_posed(q, m, visible={"bed"}))
    count = q_of("object_count", {"category": "sofa"}, m)
    assert check_well_posed(count, m, visible=set()) == []  # counts are exempt


def test_well_posed_direction_margin():
    # 3 degrees from the forward axis: too close to the Left/Right boundary
    m = CogMap.from_boxes([pt("sofa", 0.1, 3.0), pt("bed", 0, 0)])
    q = q_of("relative_direction", mc("", ["sofa", "bed"]), m)
    assert any("boundary" in p for p in check_well_posed(q, m))
    m = CogMap.from_boxes([pt("sofa", 2.0, 3.0), pt("bed", 0, 0)])
    assert check_well_posed(q_of("relative_direction", mc("", ["sofa", "bed"]), m), m) == []


def test_well_posed_numerical_rules():
    m = CogMap.from_boxes(
        [("sofa", (0, 0, 1, 1)), ("bed", (1.15, 0, 2, 1)), ("box", (0.04, 3, 0.3, 3.1))]
    )
    close = q_of("min_distance", {"objects": ["sofa", "bed"]}, m)
    assert any("below 0.2" in p for p in check_well_posed(close, m))
    small = q_of("object_size", {"objects": ["box"]}, m)  # 0.26 m reads as 0.3 m: 15% off
    assert any("% off" in p for p in check_well_posed(small, m))


def test_well_posed_nearest_gap():
    m = CogMap.from_boxes(
        [pt("sofa", 0, 0), pt("bed", 0, 2.0), pt("desk", 2.1, 0), pt("box", 5, 5), pt("tv", -4, 4)]
    )
    q = q_of("nearest_object", {"objects": ["sofa"], "options": ["bed", "desk", "box", "tv"]}, m)
    assert any("differ by" in p for p in check_well_posed(q, m))


# ---- properties over random layouts -----------------------------------------------------------


def drawn(seed: int, task: str):
    """A random layout of seed ``seed`` and a generated ``task`` question on it (None: none)."""
    rng = random.Random(seed)
    scene = random_scene_map(rng, 10)
    q = generate_question(task, scene, rng)
    return None if q is None else (q, scene)


@given(st.integers(0, 10**6), st.sampled_from(sorted(TASKS)))
def test_generated_questions_solve_to_their_answer(seed, task):
    if (got := drawn(seed, task)) is None:
        return
    q, scene = got
    assert check_well_posed(q, scene) == []
    assert solve(task, q.params, scene) == q.answer
    assert solve(task, q.params, relevant_map(task, q.params, scene)) == q.answer
    # the target: complete format, its map, and an answer that earns full marks
    target = make_target(q, scene)
    r = parse_response(target)
    assert r.format_ok and r.cogmap == relevant_map(task, q.params, scene).rounded()
    assert score_answer(task, target, q.answer).score == 1.0
    assert paper_score(target, q.answer) == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
    assert write_think(task, q.params, r.cogmap).endswith(
        f"option {r.answer}." if TASKS[task].kind == "multiple_choice" else "."
    )


@given(
    st.integers(0, 10**6),
    st.sampled_from(
        ["vertical_direction", "horizontal_direction", "relative_direction", "nearest_object"]
    ),
    st.floats(-100, 100),
    st.floats(-100, 100),
)
def test_direction_answers_ignore_translation(seed, task, dx, dy):
    if (got := drawn(seed, task)) is None:
        return
    q, scene = got
    assert solve(task, q.params, scene.translated(dx, dy)) == q.answer


@given(st.integers(0, 10**6), st.sampled_from(sorted(TASKS)), st.sampled_from([10, 20]))
def test_grid_maps_are_solvable(seed, task, n):
    if (got := drawn(seed, task)) is None:
        return
    q, scene = got
    grid = scene.to_grid(n)
    assert len(grid) == len(scene) and all(o.bbox[0] == o.bbox[2] for o in grid)
    answer = solve(task, q.params, grid)
    if answer is None:  # only when A and B share a cell: no direction to define a frame
        a, b = (grid.find(n).center for n in q.params["objects"][:2])
        assert task in ("vertical_direction", "horizontal_direction") and a == b


def test_each_task_explains_itself_with_arrows():
    """Every task defines its arrows (figures draw them); min_distance's join the closest points."""
    import math

    from v2lo_utils import geometry as geo

    rng = random.Random(5)
    seen = set()
    for _ in range(200):
        scene = random_scene_map(rng, 10)
        for task, t in TASKS.items():
            q = generate_question(task, scene, rng)
            if q is None:
                continue
            arrows = t.vectors(q.params, scene)
            assert bool(arrows) == (task not in ("object_size", "object_count")), task
            seen.add(task)
            if task == "min_distance":
                (start, end, _), (a, b) = arrows[0], (scene.find(n).bbox for n in q.names())
                assert math.dist(start, end) == pytest.approx(geo.closest_distance(a, b))
    assert seen == set(TASKS)


PAIR = r"\((-?\d+\.\d), (-?\d+\.\d)\)"


@given(st.integers(0, 10**6), st.sampled_from(DIRECTIONS))
def test_direction_thinks_run_on_their_own_one_decimal_numbers(seed, task):
    """Every number a direction think writes has the map's one decimal, follows from the map and
    the numbers written before it, and the signs it states give the answer: a think the model
    can execute from its own map, a step at a time."""
    if (got := drawn(seed, task)) is None:
        return
    q, scene = got
    target = make_target(q, scene)
    r = parse_response(target)
    think = r.think
    assert all(re.fullmatch(r"-?\d+\.\d", n) for n in re.findall(r"-?\d+\.\d+", think))
    names = q.params["objects"]
    cents, frame_text = re.match(r"Centroids from the map: (.*?)\. (.*?)\. v = ", think).group(1, 2)
    cent = {n: (float(x), float(y)) for n, x, y in re.findall(r"(\w+) " + PAIR, cents)}
    for n in names:  # each centroid: the map's box centre at 0.1 m
        box = r.cogmap.find(n).bbox
        want = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        assert cent[n] == pytest.approx(want, abs=0.05 + 1e-9)
    pairs = [tuple(map(float, p)) for p in re.findall(PAIR, frame_text)]
    c = [cent[n] for n in names]
    if task == "relative_direction":
        f, rr = (0.0, 1.0), (1.0, 0.0)
    else:
        a, b = c[0], c[1]
        d = (b[0] - a[0], b[1] - a[1])
        u = (d[0] / math.hypot(*d), d[1] / math.hypot(*d))
        if task == "vertical_direction":
            f, rr = pairs
            assert f == pytest.approx(u, abs=0.05 + 1e-9) and rr == (f[1], -f[0])
        else:
            rr, f = pairs
            side = 1 if q.params["variant"] == "right" else -1
            assert rr == pytest.approx((side * u[0], side * u[1]), abs=0.05 + 1e-9)
            assert f == (-rr[1], rr[0])
    v = tuple(map(float, re.search(r"v = \w+ - \w+ = " + PAIR, think).group(1, 2)))
    assert v == pytest.approx((c[-2][0] - c[-1][0], c[-2][1] - c[-1][1]), abs=1e-9)
    front = v[0] * f[0] + v[1] * f[1] > 0
    right = v[0] * rr[0] + v[1] * rr[1] > 0
    assert f"v.f {'> 0, so front' if front else '<= 0, so back'}" in think
    assert f"v.r {'> 0, so right' if right else '<= 0, so left'}" in think
    label = f"{'Right' if right else 'Left'}-{'Front' if front else 'Back'}"
    assert f"is {label} of the" in think and label == q.params["options"][LETTERS.index(r.answer)]
    assert r.answer == q.answer


@given(st.integers(0, 10**6), st.sampled_from(DIRECTIONS))
def test_think_steps_judge_each_step_on_the_thinks_own_numbers(seed, task):
    if (got := drawn(seed, task)) is None:
        return
    q, scene = got
    r = parse_response(make_target(q, scene))
    own = think_steps(task, q.params, r.think, r.cogmap)
    frame = None if task == "relative_direction" else True
    assert own == {
        "centroids": True,
        "frame": frame,
        "v": True,
        "signs": True,
        "quadrant": True,
        "option": True,
    }
    # the think against another map: only the centroids leave it, the later steps still follow
    moved = CogMap.from_json(
        [{**o, "bbox": [c + 1.0 for c in o["bbox"]]} for o in r.cogmap.to_json()]
    )
    assert think_steps(task, q.params, r.think, moved) == {**own, "centroids": False}
    # a wrong v: v fails, and the signs are judged on that v
    v = re.search(PAIR + r"\. v\.f", r.think)
    wrong = r.think.replace(v.group(0), f"({float(v.group(1)) + 0.5:.1f}, {v.group(2)}). v.f")
    assert think_steps(task, q.params, wrong, r.cogmap)["v"] is False
    # the other letter after the right quadrant
    letter = re.search(r"option ([A-D])\.", r.think).group(1)
    other = LETTERS[(LETTERS.index(letter) + 1) % 4]
    swapped = think_steps(
        task, q.params, r.think.replace(f"option {letter}.", f"option {other}."), r.cogmap
    )
    assert swapped == {**own, "option": False}


def test_think_steps_know_where_a_think_stops_computing():
    cm = CogMap.from_boxes([pt("sofa", 0, 0), pt("chair", 2, 1)])
    p = {"objects": ["chair", "sofa"], "options": QUADS}
    think = (
        "Centroids from the map: chair (2.0, 1.0); sofa (0.0, 0.0). In the camera frame forward "
        "f = (0, 1) and right r = (1, 0). v = chair - sofa = (2.0, 1.0). v.f > 0, so front; "
        "v.r <= 0, so left. The chair is Right-Front of the sofa: option A."
    )
    got = think_steps("relative_direction", p, think, cm)
    # the signs contradict v (right, not left), the quadrant contradicts the signs, and option A
    # is Left-Front, not the Right-Front the think named
    assert got == {
        "centroids": True,
        "frame": None,
        "v": True,
        "signs": False,
        "quadrant": False,
        "option": False,
    }
    assert think_steps("object_size", {"objects": ["sofa"]}, think, cm) is None
    assert think_steps("relative_direction", p, "the chair is somewhere", cm) is None
    assert think_steps("relative_direction", p, think + "." * 2000, cm) is None  # too long
    lacking = CogMap.from_boxes([pt("sofa", 0, 0)])
    assert think_steps("relative_direction", p, think, lacking) is None


def test_a_think_near_a_boundary_still_ends_in_solves_answer():
    """A map off the targets' 0.1 m grid, 0.04 m right of the boundary: the written v rounds to
    x 0.0, the stated sign is the exact geometry's, so the think ends in solve's answer."""
    cm = CogMap.from_boxes([pt("chair", 0.04, 1.0), pt("sofa", 0.0, 0.0)])
    p = {"objects": ["chair", "sofa"], "options": QUADS}
    think = write_think("relative_direction", p, cm)
    assert "v = chair - sofa = (0.0, 1.0). v.f > 0, so front; v.r > 0, so right." in think
    assert think.endswith(f"option {solve('relative_direction', p, cm)}.")
    steps = think_steps("relative_direction", p, think, cm)
    assert steps["signs"] is False and steps["quadrant"] and steps["option"]
