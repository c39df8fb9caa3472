"""Question types of QVS-Bench (plus nearest_object), their one ``solve``, and the ``think`` writer.

Spec section 2 fixes the templates, shares and answer geometry. Every answer comes from
:func:`solve`, whatever the map: the exact ground truth, its 0.1 m text rendering, a model's parsed
map or a grid map. Coordinates are meters in the map frame (+x right, +y forward of the first
camera). A question's ``params`` hold everything ``solve`` needs: the object names in template
order (A, B, C, D), the left/right variant, and the option labels in letter order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import geometry as geo
from .cogmap import CogMap, format_grid_map, format_response, name_key

MC, NUMERICAL = "multiple_choice", "numerical"
LETTERS = "ABCD"

MAP_RESOLUTION = 0.1  # m: the precision of numbers in map text
# The most two centroids of a 0.1 m-rounded map can move relative to each other (m).
ROUNDING_SHIFT = 2 * (MAP_RESOLUTION / 2) * math.sqrt(2)
MIN_MARGIN_DEG = 10.0  # direction answers stay this far (plus the rounding bound) from a boundary
NEAREST_MIN_GAP = 0.3  # m: second-nearest minus nearest center distance (> 2 * ROUNDING_SHIFT)
MIN_DISTANCE_M = 0.2  # m: smallest min_distance answer asked
MAX_MAP_REL_ERROR = 0.05  # numerical answers from the 0.1 m map stay within 5% of the truth


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    template: str
    n_objects: int  # unique objects named by the template (A, B, ...)


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            "vertical_direction",
            MC,
            "Considering the vector from {A} to {B} as the 'forward/backward' direction, "
            "how is the {C} positioned relative to the {D}?",
            4,
        ),
        TaskSpec(
            "horizontal_direction",
            MC,
            "If the {B} is directly to the {side} of the {A}, "
            "what is the direction of the {C} from the {D}?",
            4,
        ),
        TaskSpec(
            "min_distance",
            NUMERICAL,
            "Measuring from the closest points between the two objects, what is the distance "
            "between the {A} and the {B} in meters?",
            2,
        ),
        TaskSpec(
            "object_size",
            NUMERICAL,
            "What is the maximum dimension (either width or length) of the {A} in meters?",
            1,
        ),
        TaskSpec(
            "relative_direction",
            MC,
            "From the camera's perspective, what is the direction of the {A} from the {B}?",
            2,
        ),
        TaskSpec(
            "object_count", NUMERICAL, "How many '{category}' objects are there in this scene?", 0
        ),
        TaskSpec(
            "nearest_object",
            MC,
            "Considering the center point of the {A} as a reference point, which of these "
            "objects has the nearest center point to it?",
            1,
        ),
    )
}

QVS_TASK_SHARES: dict[str, float] = {
    "vertical_direction": 0.252,
    "horizontal_direction": 0.252,
    "min_distance": 0.126,
    "object_size": 0.118,
    "relative_direction": 0.126,
    "object_count": 0.126,
}
QVS_FRAME_SHARES: dict[int, float] = {1: 0.202, 4: 0.202, 8: 0.202, 12: 0.202, 16: 0.192}


def allocate(total: int, shares: dict) -> dict:
    """Split ``total`` items by ``shares`` with whole counts (largest remainder, ties in key order).

    500 questions give 126/126/63/59/63/63 tasks and 101 x 4 + 96 frame counts (spec section 2).
    """
    weight = sum(shares.values())
    raw = {k: total * s / weight for k, s in shares.items()}
    counts = {k: math.floor(v + 1e-9) for k, v in raw.items()}
    order = sorted(shares, key=lambda k: -(raw[k] - counts[k]))
    for k in order[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


@dataclass(frozen=True)
class Question:
    """A question over a scene. ``answer`` is the option letter or the number as text."""

    task: str
    text: str
    answer: str
    params: dict = field(hash=False)

    @property
    def kind(self) -> str:
        return TASKS[self.task].kind

    @property
    def options(self) -> list[str]:
        """Option labels in letter order (empty for numerical tasks)."""
        return list(self.params.get("options", []))

    def lettered_options(self) -> list[str]:
        return [f"{LETTERS[i]}. {o}" for i, o in enumerate(self.options)]

    def prompt(self) -> str:
        """Question text followed by one line per lettered option."""
        return "\n".join([self.text, *self.lettered_options()])

    def names(self) -> list[str]:
        """The objects the question is about: what its map lists (count: the category)."""
        return question_names(self.task, self.params)

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "question": self.text,
            "options": self.lettered_options(),
            "answer": self.answer,
            "params": self.params,
        }


def question_names(task: str, params: dict) -> list[str]:
    if task == "object_count":
        return [params["category"]]
    names = list(params["objects"])
    if task == "nearest_object":
        names += list(params["options"])
    return names


def relevant_map(task: str, params: dict, cogmap: CogMap) -> CogMap:
    """The objects a target map lists for this question, in the order the question names them
    (for counting: every instance)."""
    return cogmap.subset(question_names(task, params))


# ---------------------------------------------------------------------------------------------
# The answer geometry. Each task function returns (result, facts): the quadrant label, the chosen
# option or the number, and the intermediate quantities the think writer prints. None when the map
# lacks an object the question names.

Facts = dict
Computed = tuple[object, Facts] | None


def _centers(cogmap: CogMap, names: Sequence[str]) -> list[geo.Vec] | None:
    out = []
    for n in names:
        o = cogmap.find(n)
        if o is None:
            return None
        out.append(o.center)
    return out


def _local_quadrant(v: geo.Vec, f: geo.Vec, r: geo.Vec, facts: Facts) -> Computed:
    facts.update(f=f, r=r, v=v, vf=geo.dot(v, f), vr=geo.dot(v, r))
    return geo.quadrant(v, f, r), facts


def _vertical(p: dict, cm: CogMap) -> Computed:
    c = _centers(cm, p["objects"])
    if c is None or geo.norm(geo.sub(c[1], c[0])) == 0:
        return None
    f = geo.unit(geo.sub(c[1], c[0]))
    return _local_quadrant(geo.sub(c[2], c[3]), f, geo.right_of(f), {"centers": c})


def _horizontal(p: dict, cm: CogMap) -> Computed:
    c = _centers(cm, p["objects"])
    if c is None or geo.norm(geo.sub(c[1], c[0])) == 0:
        return None
    r = geo.unit(geo.sub(c[1], c[0]))
    if p["variant"] == "left":
        r = (-r[0], -r[1])
    return _local_quadrant(geo.sub(c[2], c[3]), geo.forward_of(r), r, {"centers": c})


def _relative(p: dict, cm: CogMap) -> Computed:
    c = _centers(cm, p["objects"])
    if c is None:
        return None
    return _local_quadrant(geo.sub(c[0], c[1]), (0.0, 1.0), (1.0, 0.0), {"centers": c})


def _min_distance(p: dict, cm: CogMap) -> Computed:
    a, b = (cm.find(n) for n in p["objects"])
    if a is None or b is None:
        return None
    return geo.closest_distance(a.bbox, b.bbox), {"boxes": (a.bbox, b.bbox)}


def _object_size(p: dict, cm: CogMap) -> Computed:
    a = cm.find(p["objects"][0])
    if a is None:
        return None
    return geo.max_dimension(a.bbox), {"box": a.bbox}


def _object_count(p: dict, cm: CogMap) -> Computed:
    return cm.count(p["category"]), {}


def _nearest(p: dict, cm: CogMap) -> Computed:
    c = _centers(cm, [p["objects"][0], *p["options"]])
    if c is None:
        return None
    dists = [geo.norm(geo.sub(x, c[0])) for x in c[1:]]
    best = min(range(len(dists)), key=dists.__getitem__)
    return p["options"][best], {"centers": c, "dists": dists}


_COMPUTE: dict[str, Callable[[dict, CogMap], Computed]] = {
    "vertical_direction": _vertical,
    "horizontal_direction": _horizontal,
    "relative_direction": _relative,
    "min_distance": _min_distance,
    "object_size": _object_size,
    "object_count": _object_count,
    "nearest_object": _nearest,
}


def _compute(task: str, params: dict, cogmap: CogMap) -> Computed:
    if task not in _COMPUTE:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return _COMPUTE[task](params, cogmap)


def format_number(task: str, value: float) -> str:
    """Numerical answers as text: counts as integers, meters with two decimals."""
    return str(int(value)) if task == "object_count" else f"{value:.2f}"


def _as_answer(task: str, params: dict, result: object) -> str:
    if TASKS[task].kind == MC:
        return LETTERS[list(params["options"]).index(result)]
    return format_number(task, float(result))


def solve(task: str, params: dict, cogmap: CogMap) -> str | None:
    """The answer (option letter, or number as text) that ``cogmap`` implies for the question;
    None when the map lacks an object the question names. The one code path for ground truth,
    oracle, grid and noisy-map answers alike."""
    computed = _compute(task, params, cogmap)
    return None if computed is None else _as_answer(task, params, computed[0])


def solve_value(task: str, params: dict, cogmap: CogMap) -> float | str | None:
    """Like :func:`solve` but unformatted: the number (m or count) or the option label."""
    computed = _compute(task, params, cogmap)
    return None if computed is None else computed[0]  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Think: the computation spelled out with the map's own (rounded) numbers


def _p(v: geo.Vec) -> str:
    return f"({v[0]:.2f}, {v[1]:.2f})"


def _paren(x: float) -> str:
    return f"({x:.1f})" if x < 0 else f"{x:.1f}"


def _sign(x: float, pos: str, neg: str) -> str:
    return f"{x:.2f} > 0, so {pos}" if x > 0 else f"{x:.2f} <= 0, so {neg}"


def write_think(task: str, params: dict, cogmap: CogMap) -> str:
    """The step-by-step computation over ``cogmap`` that ends in :func:`solve`'s answer.

    Raises ValueError when the map lacks an object the question names.
    """
    computed = _compute(task, params, cogmap)
    if computed is None:
        raise ValueError(f"the map lacks an object named by the {task} question")
    result, f = computed
    names = question_names(task, params)
    answer = _as_answer(task, params, result)
    if task in (
        "vertical_direction",
        "horizontal_direction",
        "relative_direction",
        "nearest_object",
    ):
        cents = "; ".join(f"{n} {_p(c)}" for n, c in zip(names, f["centers"], strict=True))
        head = f"Centroids from the map: {cents}."
    if task == "vertical_direction":
        a, b, c, d = names
        lines = [
            head,
            f"Forward f = unit({b} - {a}) = {_p(f['f'])}; right r = (f_y, -f_x) = {_p(f['r'])}.",
        ]
    elif task == "horizontal_direction":
        a, b, c, d = names
        sign = "" if params["variant"] == "right" else "-"
        lines = [
            head,
            f"The {b} is to the {params['variant']} of the {a}, so right r = {sign}unit({b} - {a})"
            f" = {_p(f['r'])}; forward f = (-r_y, r_x) = {_p(f['f'])}.",
        ]
    elif task == "relative_direction":
        c, d = names
        lines = [head, "In the camera frame forward f = (0, 1) and right r = (1, 0)."]
    if TASKS[task].kind == MC and task != "nearest_object":
        lines += [
            f"v = {c} - {d} = {_p(f['v'])}.",
            f"v.f = {_sign(f['vf'], 'front', 'back')}; v.r = {_sign(f['vr'], 'right', 'left')}.",
            f"The {c} is {result} of the {d}: option {answer}.",
        ]
    elif task == "nearest_object":
        ref = names[0]
        dists = ", ".join(
            f"{n} {d:.2f} m" for n, d in zip(params["options"], f["dists"], strict=True)
        )
        lines = [
            head,
            f"Distances from the {ref}: {dists}.",
            f"Nearest: {result}, option {answer}.",
        ]
    elif task == "min_distance":
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = f["boxes"]
        dx = max(0.0, bx0 - ax1, ax0 - bx1)
        dy = max(0.0, by0 - ay1, ay0 - by1)
        lines = [
            f"{names[0]} spans x [{ax0:.1f}, {ax1:.1f}], y [{ay0:.1f}, {ay1:.1f}]; "
            f"{names[1]} spans x [{bx0:.1f}, {bx1:.1f}], y [{by0:.1f}, {by1:.1f}].",
            f"Gap along x = {dx:.2f} m, gap along y = {dy:.2f} m.",
            f"Closest-point distance = sqrt({dx:.2f}^2 + {dy:.2f}^2) = {answer} m.",
        ]
    elif task == "object_size":
        x0, y0, x1, y1 = f["box"]
        lines = [
            f"{names[0]}: width = {x1:.1f} - {_paren(x0)} = {x1 - x0:.2f} m, "
            f"length = {y1:.1f} - {_paren(y0)} = {y1 - y0:.2f} m.",
            f"Maximum dimension = {answer} m.",
        ]
    elif task == "object_count":
        lines = [f"The map lists {answer} '{params['category']}' object(s)."]
    return " ".join(lines)


def make_target(question: Question, scene: CogMap) -> str:
    """The training target: the question's objects as 0.1 m map text, the think computed from
    those rounded numbers, and the answer they imply (within tolerance of ``question.answer``)."""
    shown = relevant_map(question.task, question.params, scene).rounded()
    think = write_think(question.task, question.params, shown)
    return format_response(shown, think, solve(question.task, question.params, shown) or "")


def make_grid_target(question: Question, scene: CogMap, extent: geo.Box, n: int = 10) -> str:
    """The grid-map variant of a target: the question's objects as cells of an n x n grid over
    ``extent`` (m, map frame), the think over cell centers, and the answer the grid implies
    (which may differ from ``question.answer``: that gap is what the grid loses)."""
    shown = relevant_map(question.task, question.params, scene)
    grid = shown.to_grid(n, extent)
    answer = solve(question.task, question.params, grid)
    think = (
        write_think(question.task, question.params, grid)
        if answer is not None
        else "Two objects share a grid cell, so the direction is undefined."
    )
    return (
        f"{format_grid_map(shown, n, extent)}<think>{think}</think><answer>{answer or ''}</answer>"
    )


# ---------------------------------------------------------------------------------------------
# Building questions and keeping only well-posed ones


def make_question(
    task: str,
    objects: Sequence[str],
    scene: CogMap,
    rng: random.Random,
    variant: str | None = None,
    option_pool: Sequence[str] = (),
) -> Question:
    """A question about ``objects`` (names in template order; for object_count, the category).

    Options are shuffled with ``rng``: the four quadrant labels, or for nearest_object the four
    names in ``option_pool``. ``variant`` is 'left' or 'right' for horizontal_direction.
    """
    spec = TASKS[task]
    params: dict = {}
    if task == "object_count":
        params["category"] = objects[0]
        text = spec.template.format(category=objects[0])
    else:
        params["objects"] = list(objects)
        text = spec.template.format(**dict(zip("ABCD", objects, strict=False)), side=variant)
    if task == "horizontal_direction":
        if variant not in ("left", "right"):
            raise ValueError(
                f"horizontal_direction needs variant 'left' or 'right', got {variant!r}"
            )
        params["variant"] = variant
    if spec.kind == MC:
        pool = list(option_pool) if task == "nearest_object" else list(geo.QUADRANTS)
        rng.shuffle(pool)
        params["options"] = pool
    answer = solve(task, params, scene)
    if answer is None:
        raise ValueError(f"scene lacks an object named in {task} question: {text}")
    return Question(task, text, answer, params)


def check_well_posed(
    question: Question, scene: CogMap, visible: set[str] | None = None
) -> list[str]:
    """Why the question is not well posed (spec section 2); an empty list when it is.

    ``scene`` is the exact ground-truth map of the whole scene; ``visible`` the names seen in at
    least one sampled frame (None skips that rule; count questions are exempt from it).
    """
    task, p = question.task, question.params
    problems = []
    named = [] if task == "object_count" else question_names(task, p)
    for n in named:
        if scene.count(n) != 1:
            problems.append(f"{n!r} is not a unique category in the scene")
        if visible is not None and name_key(n) not in {name_key(v) for v in visible}:
            problems.append(f"{n!r} is visible in no sampled frame")
    if problems:
        return problems
    exact = _compute(task, p, scene)
    if exact is None:
        return ["the scene lacks an object the question names"]
    shown = relevant_map(task, p, scene).rounded()
    from_map = solve_value(task, p, shown)
    if TASKS[task].kind == MC:
        if from_map != exact[0]:
            problems.append("the 0.1 m map gives a different answer")
        if task == "nearest_object":
            gap = sorted(exact[1]["dists"])
            if gap[1] - gap[0] < NEAREST_MIN_GAP:
                problems.append(f"nearest and second-nearest differ by {gap[1] - gap[0]:.2f} m")
        else:
            problems += _direction_problems(task, exact[1])
    else:
        value = float(exact[0])
        if task == "min_distance" and value < MIN_DISTANCE_M:
            problems.append(f"distance {value:.2f} m is below {MIN_DISTANCE_M} m")
        shown_value = float(format_number(task, float(from_map)))  # as the target writes it
        err = abs(shown_value - value) / abs(value) if value else abs(shown_value)
        if err >= MAX_MAP_REL_ERROR:
            problems.append(f"the 0.1 m map answer is {err:.1%} off the exact answer")
    return problems


def _direction_problems(task: str, facts: Facts) -> list[str]:
    c = facts["centers"]
    bound = geo.perturbation_deg(geo.norm(facts["v"]), ROUNDING_SHIFT)
    if task != "relative_direction":
        bound += geo.perturbation_deg(geo.norm(geo.sub(c[1], c[0])), ROUNDING_SHIFT)
    margin = geo.boundary_margin_deg(facts["v"], facts["f"])
    if margin < MIN_MARGIN_DEG + bound:
        return [
            f"direction is {margin:.1f} deg from a quadrant boundary (needs {MIN_MARGIN_DEG + bound:.1f})"
        ]
    return []


def generate_question(
    task: str,
    scene: CogMap,
    rng: random.Random,
    visible: set[str] | None = None,
    tries: int = 100,
) -> Question | None:
    """A random well-posed question of ``task`` about ``scene``, or None after ``tries`` attempts."""
    spec = TASKS[task]
    seen = {name_key(v) for v in visible} if visible is not None else None
    unique = sorted(
        {
            o.name
            for o in scene
            if scene.count(o.name) == 1 and (seen is None or name_key(o.name) in seen)
        }
    )
    categories = sorted({o.name for o in scene})
    for _ in range(tries):
        if task == "object_count":
            if not categories:
                return None
            # pick the count first, then a category with it: answers spread over 1, 2, 3, ...
            by_count: dict[int, list[str]] = {}
            for c in categories:
                by_count.setdefault(scene.count(c), []).append(c)
            pool = by_count[rng.choice(sorted(by_count))]
            q = make_question(task, [rng.choice(pool)], scene, rng)
        else:
            need = spec.n_objects + (4 if task == "nearest_object" else 0)
            if len(unique) < need:
                return None
            picked = rng.sample(unique, need)
            variant = rng.choice(("left", "right")) if task == "horizontal_direction" else None
            q = make_question(
                task, picked[: spec.n_objects], scene, rng, variant, picked[spec.n_objects :]
            )
        if not check_well_posed(q, scene, visible):
            return q
    return None
