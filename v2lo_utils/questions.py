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
import re
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


# TASKS (name -> Task: everything one question type defines) follows the answer geometry below.

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
    """The objects a question is about, in the order it names them (count: the category)."""
    return TASKS[task].names(params)


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


def _p(v: geo.Vec) -> str:
    return f"({v[0]:.2f}, {v[1]:.2f})"


def _paren(x: float) -> str:
    return f"({x:.1f})" if x < 0 else f"{x:.1f}"


Arrow = tuple[geo.Vec, geo.Vec, str]


@dataclass(frozen=True)
class Task:
    """One question type, whole: its template and options, how questions are drawn, the answer
    geometry (:meth:`compute`), the think, its own well-posedness rules and the arrows that
    explain it in a figure. A new task is one subclass and one entry in :data:`TASKS`."""

    name: str
    kind: str
    template: str
    n_objects: int  # unique objects named by the template (A, B, ...)
    extra_names: int = 0  # further unique objects drawn (nearest_object: its four options)

    # -- the question

    def names(self, p: dict) -> list[str]:
        """The objects the question is about, in the order it names them."""
        return list(p["objects"])

    def unique_names(self, p: dict) -> list[str]:
        """The names that must be unique categories of the scene (and seen in the frames)."""
        return self.names(p)

    def params(self, objects: Sequence[str], variant: str | None) -> dict:
        return {"objects": list(objects)}

    def text(self, objects: Sequence[str], variant: str | None) -> str:
        return self.template.format(**dict(zip("ABCD", objects, strict=False)), side=variant)

    def option_pool(self, pool: Sequence[str]) -> list[str]:
        """The option labels before shuffling (multiple choice): the four quadrants."""
        return list(geo.QUADRANTS)

    def draw(
        self, unique: list[str], categories: list[str], scene: CogMap, rng: random.Random
    ) -> tuple[list[str], str | None, list[str]] | None:
        """Random objects, variant and option names for one attempt; None when the scene has too
        few unique objects."""
        need = self.n_objects + self.extra_names
        if len(unique) < need:
            return None
        picked = rng.sample(unique, need)
        return picked[: self.n_objects], self.variant(rng), picked[self.n_objects :]

    def variant(self, rng: random.Random) -> str | None:
        return None

    # -- the answer

    def compute(self, p: dict, cm: CogMap) -> Computed:
        """(result, facts): the quadrant label, chosen option or number, and the intermediate
        quantities the think prints; None when the map lacks an object the question names."""
        raise NotImplementedError

    def format_number(self, value: float) -> str:
        """A numerical answer as text: meters with two decimals."""
        return f"{value:.2f}"

    def think(self, names: list[str], p: dict, f: Facts, result: object, answer: str) -> list[str]:
        raise NotImplementedError

    def problems(self, p: dict, exact: tuple[object, Facts]) -> list[str]:
        """The task's own well-posedness rules on the exact answer (spec section 2)."""
        return []

    def vectors(self, p: dict, cm: CogMap) -> list[Arrow]:
        """The arrows that explain the question: (start, end, label) in the map frame (m)."""
        return []


def _centroid_line(
    names: list[str], centers: list[geo.Vec], fmt: Callable[[geo.Vec], str] = _p
) -> str:
    cents = "; ".join(f"{n} {fmt(c)}" for n, c in zip(names, centers, strict=True))
    return f"Centroids from the map: {cents}."


def _t(x: float) -> float:
    """``x`` at the map's resolution (0.1 m), as the direction think writes it (never -0.0)."""
    return round(x, 1) + 0.0


def _tv(v: geo.Vec) -> geo.Vec:
    return (_t(v[0]), _t(v[1]))


def _p1(v: geo.Vec) -> str:
    return f"({_t(v[0]):.1f}, {_t(v[1]):.1f})"


def _side(x: float, pos: str, neg: str) -> str:
    return f"> 0, so {pos}" if x > 0 else f"<= 0, so {neg}"


@dataclass(frozen=True)
class _Direction(Task):
    """Where object C lies from D in a local frame (forward f, right r): a quadrant option.

    The think works at the map's resolution: every number it writes has one decimal (one
    coordinate token of the presets), each computed from the numbers written before it (the
    centroids, the frame's unit vectors, v), and only the signs of v.f and v.r, which decide the
    quadrant, are stated. The signs are the exact geometry's, so the think always ends in
    :func:`solve`'s answer; for a well-posed question's map the answer's margin from every
    boundary (:data:`MIN_MARGIN_DEG`) makes them the written numbers' signs too, while a map near
    a boundary (a baseline's, a grid's) may have written numbers that round across it."""

    def axis(self, p: dict, a: geo.Vec, b: geo.Vec) -> geo.Vec:
        """The frame's unit vector that A's and B's centroids define (m, map frame); the other
        follows from it. Not for relative_direction, whose frame is the camera's."""
        raise NotImplementedError

    def local_frame(self, p: dict, cents: list[geo.Vec]) -> tuple[geo.Vec, geo.Vec]:
        """(f, r) at the map's resolution from the think's rounded centroids."""
        raise NotImplementedError

    def frame_lines(self, names: list[str], p: dict, f: geo.Vec, r: geo.Vec) -> list[str]:
        raise NotImplementedError

    def think(self, names, p, f, result, answer):
        c, d = names[-2], names[-1]
        cents = [_tv(x) for x in f["centers"]]
        fwd, right = self.local_frame(p, cents)
        v = _tv(geo.sub(cents[-2], cents[-1]))
        return [
            _centroid_line(names, cents, _p1),
            *self.frame_lines(names, p, fwd, right),
            f"v = {c} - {d} = {_p1(v)}.",
            f"v.f {_side(f['vf'], 'front', 'back')}; v.r {_side(f['vr'], 'right', 'left')}.",
            f"The {c} is {result} of the {d}: option {answer}.",
        ]

    def problems(self, p, exact):
        facts = exact[1]
        c = facts["centers"]
        bound = geo.perturbation_deg(geo.norm(facts["v"]), ROUNDING_SHIFT)
        if self.n_objects == 4:  # the frame's own axis moves with rounding too
            bound += geo.perturbation_deg(geo.norm(geo.sub(c[1], c[0])), ROUNDING_SHIFT)
        margin = geo.boundary_margin_deg(facts["v"], facts["f"])
        if margin < MIN_MARGIN_DEG + bound:
            return [
                f"direction is {margin:.1f} deg from a quadrant boundary (needs {MIN_MARGIN_DEG + bound:.1f})"
            ]
        return []

    def centers(self, p: dict, cm: CogMap) -> list[geo.Vec] | None:
        return _centers(cm, p["objects"])


@dataclass(frozen=True)
class _Vertical(_Direction):
    def compute(self, p, cm):
        c = _centers(cm, p["objects"])
        if c is None or geo.norm(geo.sub(c[1], c[0])) == 0:
            return None
        f = self.axis(p, c[0], c[1])
        return _local_quadrant(geo.sub(c[2], c[3]), f, geo.right_of(f), {"centers": c})

    def axis(self, p, a, b):
        """Forward f = unit(B - A)."""
        return geo.unit(geo.sub(b, a))

    def local_frame(self, p, cents):
        f = _tv(self.axis(p, cents[0], cents[1]))
        return f, _tv(geo.right_of(f))

    def frame_lines(self, names, p, f, r):
        a, b = names[0], names[1]
        return [f"Forward f = unit({b} - {a}) = {_p1(f)}; right r = (f_y, -f_x) = {_p1(r)}."]

    def vectors(self, p, cm):
        pts = self.centers(p, cm)
        return (
            []
            if pts is None
            else [(pts[0], pts[1], "forward"), (pts[3], pts[2], "vector to evaluate")]
        )


@dataclass(frozen=True)
class _Horizontal(_Direction):
    def params(self, objects, variant):
        if variant not in ("left", "right"):
            raise ValueError(
                f"horizontal_direction needs variant 'left' or 'right', got {variant!r}"
            )
        return {"objects": list(objects), "variant": variant}

    def variant(self, rng):
        return rng.choice(("left", "right"))

    def compute(self, p, cm):
        c = _centers(cm, p["objects"])
        if c is None or geo.norm(geo.sub(c[1], c[0])) == 0:
            return None
        r = self.axis(p, c[0], c[1])
        return _local_quadrant(geo.sub(c[2], c[3]), geo.forward_of(r), r, {"centers": c})

    def axis(self, p, a, b):
        """Right r = unit(B - A) when B is to the right of A, -unit(B - A) when to the left."""
        r = geo.unit(geo.sub(b, a))
        return (-r[0], -r[1]) if p["variant"] == "left" else r

    def local_frame(self, p, cents):
        r = _tv(self.axis(p, cents[0], cents[1]))
        return _tv(geo.forward_of(r)), r

    def frame_lines(self, names, p, f, r):
        a, b = names[0], names[1]
        sign = "" if p["variant"] == "right" else "-"
        return [
            f"The {b} is to the {p['variant']} of the {a}, so right r = {sign}unit({b} - {a})"
            f" = {_p1(r)}; forward f = (-r_y, r_x) = {_p1(f)}."
        ]

    def vectors(self, p, cm):
        pts = self.centers(p, cm)
        label = "right" if p.get("variant") == "right" else "left"
        return (
            [] if pts is None else [(pts[0], pts[1], label), (pts[3], pts[2], "vector to evaluate")]
        )


@dataclass(frozen=True)
class _Relative(_Direction):
    def compute(self, p, cm):
        c = _centers(cm, p["objects"])
        if c is None:
            return None
        return _local_quadrant(geo.sub(c[0], c[1]), *self.local_frame(p, c), {"centers": c})

    def local_frame(self, p, cents):
        """The camera's frame: forward +y, right +x, whatever the centroids."""
        return (0.0, 1.0), (1.0, 0.0)

    def frame_lines(self, names, p, f, r):
        return ["In the camera frame forward f = (0, 1) and right r = (1, 0)."]

    def vectors(self, p, cm):
        pts = self.centers(p, cm)
        return [] if pts is None else [(pts[1], pts[0], "vector to evaluate")]


@dataclass(frozen=True)
class _Nearest(Task):
    """Which of four named objects has the nearest center to a reference object."""

    def names(self, p):
        return [*p["objects"], *p["options"]]

    def option_pool(self, pool):
        return list(pool)

    def compute(self, p, cm):
        c = _centers(cm, [p["objects"][0], *p["options"]])
        if c is None:
            return None
        dists = [geo.norm(geo.sub(x, c[0])) for x in c[1:]]
        best = min(range(len(dists)), key=dists.__getitem__)
        return p["options"][best], {"centers": c, "dists": dists}

    def think(self, names, p, f, result, answer):
        dists = ", ".join(f"{n} {d:.2f} m" for n, d in zip(p["options"], f["dists"], strict=True))
        return [
            _centroid_line(names, f["centers"]),
            f"Distances from the {names[0]}: {dists}.",
            f"Nearest: {result}, option {answer}.",
        ]

    def problems(self, p, exact):
        gap = sorted(exact[1]["dists"])
        if gap[1] - gap[0] < NEAREST_MIN_GAP:
            return [f"nearest and second-nearest differ by {gap[1] - gap[0]:.2f} m"]
        return []

    def vectors(self, p, cm):
        ref = cm.find(p["objects"][0])
        if ref is None:
            return []
        found = (cm.find(n) for n in p["options"])
        return [(ref.center, o.center, "") for o in found if o is not None]


@dataclass(frozen=True)
class _MinDistance(Task):
    """The closest-point distance between two footprints (m)."""

    def compute(self, p, cm):
        a, b = (cm.find(n) for n in p["objects"])
        if a is None or b is None:
            return None
        return geo.closest_distance(a.bbox, b.bbox), {"boxes": (a.bbox, b.bbox)}

    def think(self, names, p, f, result, answer):
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = f["boxes"]
        dx = max(0.0, bx0 - ax1, ax0 - bx1)
        dy = max(0.0, by0 - ay1, ay0 - by1)
        return [
            f"{names[0]} spans x [{ax0:.1f}, {ax1:.1f}], y [{ay0:.1f}, {ay1:.1f}]; "
            f"{names[1]} spans x [{bx0:.1f}, {bx1:.1f}], y [{by0:.1f}, {by1:.1f}].",
            f"Gap along x = {dx:.2f} m, gap along y = {dy:.2f} m.",
            f"Closest-point distance = sqrt({dx:.2f}^2 + {dy:.2f}^2) = {answer} m.",
        ]

    def problems(self, p, exact):
        value = float(exact[0])  # type: ignore[arg-type]
        if value < MIN_DISTANCE_M:
            return [f"distance {value:.2f} m is below {MIN_DISTANCE_M} m"]
        return []

    def vectors(self, p, cm):
        a, b = (cm.find(n) for n in p["objects"])
        if a is None or b is None:
            return []
        start, end = geo.closest_points(a.bbox, b.bbox)
        return [(start, end, "closest points")]


@dataclass(frozen=True)
class _ObjectSize(Task):
    """The larger side of a footprint (m)."""

    def compute(self, p, cm):
        a = cm.find(p["objects"][0])
        if a is None:
            return None
        return geo.max_dimension(a.bbox), {"box": a.bbox}

    def think(self, names, p, f, result, answer):
        x0, y0, x1, y1 = f["box"]
        return [
            f"{names[0]}: width = {x1:.1f} - {_paren(x0)} = {x1 - x0:.2f} m, "
            f"length = {y1:.1f} - {_paren(y0)} = {y1 - y0:.2f} m.",
            f"Maximum dimension = {answer} m.",
        ]


@dataclass(frozen=True)
class _ObjectCount(Task):
    """How many objects of a category the scene holds."""

    def names(self, p):
        return [p["category"]]

    def unique_names(self, p):
        return []  # the point of the question: a category with several instances

    def params(self, objects, variant):
        return {"category": objects[0]}

    def text(self, objects, variant):
        return self.template.format(category=objects[0])

    def draw(self, unique, categories, scene, rng):
        if not categories:
            return None
        # pick the count first, then a category with it: answers spread over 1, 2, 3, ...
        by_count: dict[int, list[str]] = {}
        for c in categories:
            by_count.setdefault(scene.count(c), []).append(c)
        pool = by_count[rng.choice(sorted(by_count))]
        return [rng.choice(pool)], None, []

    def compute(self, p, cm):
        return cm.count(p["category"]), {}

    def format_number(self, value):
        return str(int(value))

    def think(self, names, p, f, result, answer):
        return [f"The map lists {answer} '{p['category']}' object(s)."]


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        _Vertical(
            "vertical_direction",
            MC,
            "Considering the vector from {A} to {B} as the 'forward/backward' direction, "
            "how is the {C} positioned relative to the {D}?",
            4,
        ),
        _Horizontal(
            "horizontal_direction",
            MC,
            "If the {B} is directly to the {side} of the {A}, "
            "what is the direction of the {C} from the {D}?",
            4,
        ),
        _MinDistance(
            "min_distance",
            NUMERICAL,
            "Measuring from the closest points between the two objects, what is the distance "
            "between the {A} and the {B} in meters?",
            2,
        ),
        _ObjectSize(
            "object_size",
            NUMERICAL,
            "What is the maximum dimension (either width or length) of the {A} in meters?",
            1,
        ),
        _Relative(
            "relative_direction",
            MC,
            "From the camera's perspective, what is the direction of the {A} from the {B}?",
            2,
        ),
        _ObjectCount(
            "object_count", NUMERICAL, "How many '{category}' objects are there in this scene?", 0
        ),
        _Nearest(
            "nearest_object",
            MC,
            "Considering the center point of the {A} as a reference point, which of these "
            "objects has the nearest center point to it?",
            1,
            extra_names=4,
        ),
    )
}


def _compute(task: str, params: dict, cogmap: CogMap) -> Computed:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return TASKS[task].compute(params, cogmap)


def format_number(task: str, value: float) -> str:
    """Numerical answers as text: counts as integers, meters with two decimals."""
    return TASKS[task].format_number(value)


def _as_answer(task: str, params: dict, result: object) -> str:
    if TASKS[task].kind == MC:
        return LETTERS[list(params["options"]).index(result)]
    return format_number(task, float(result))  # type: ignore[arg-type]


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


def write_think(task: str, params: dict, cogmap: CogMap) -> str:
    """The step-by-step computation over ``cogmap`` that ends in :func:`solve`'s answer, spelled
    out with the map's own (rounded) numbers.

    Raises ValueError when the map lacks an object the question names.
    """
    computed = _compute(task, params, cogmap)
    if computed is None:
        raise ValueError(f"the map lacks an object named by the {task} question")
    result, facts = computed
    answer = _as_answer(task, params, result)
    return " ".join(TASKS[task].think(question_names(task, params), params, facts, result, answer))


DIRECTIONS = tuple(name for name, task in TASKS.items() if isinstance(task, _Direction))
THINK_STEPS = ("centroids", "frame", "v", "signs", "quadrant", "option")
_NUM = r"-?\d+(?:\.\d+)?"
_PAIR = rf"\(({_NUM}), ({_NUM})\)"
_DIRECTION_THINK = re.compile(
    rf"Centroids from the map: (?P<cents>.*?)\. (?P<frame>.*?)\. v = .+? - .+? = "
    rf"\((?P<vx>{_NUM}), (?P<vy>{_NUM})\)\. "
    rf"v\.f (?:= {_NUM} )?(?:>|<=) 0, so (?P<depth>front|back); "
    rf"v\.r (?:= {_NUM} )?(?:>|<=) 0, so (?P<side>right|left)\. "
    r"The .+? is (?P<label>\S+) of the .+?(?P<rest>[.:].*)",
    re.DOTALL,
)
MAX_THINK_CHARS = 2000  # a target's direction think has about 350: longer ones are not judged
_TOLERANCE = 0.05 + 1e-6  # m or unit-vector components: one rounding at the map's 0.1


def _near(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(abs(x - y) <= _TOLERANCE for x, y in zip(a, b, strict=True))


def think_steps(
    task: str, params: dict, think: str, cogmap: CogMap
) -> dict[str, bool | None] | None:
    """Which steps of a direction question's think (in the targets' form, :func:`write_think`)
    follow from what comes before them: the centroids from ``cogmap`` (the completion's own
    map: within 0.05 of its boxes' centres), the frame's unit vectors (None for
    relative_direction, whose frame is fixed) and v from the think's own centroids, the signs of
    v.f and v.r from its own v and frame, the quadrant from those signs, and the option letter
    from the quadrant and the question's options. Each step is judged on the think's own earlier
    numbers, so one wrong step does not fail the next: where along the chain a model stops
    computing. None for other tasks, a think not in that form (or over :data:`MAX_THINK_CHARS`), or
    a map lacking a named object."""
    if task not in DIRECTIONS or not isinstance(think, str) or len(think) > MAX_THINK_CHARS:
        return None
    m = _DIRECTION_THINK.match(think.strip())
    names = list(params["objects"])
    boxes = [cogmap.find(n) for n in names]
    if m is None or any(b is None for b in boxes):
        return None
    pair = re.compile(rf"(?:^|; )([^;]+?) {_PAIR}")
    cents = {n.strip(): (float(x), float(y)) for n, x, y in pair.findall(m["cents"])}
    steps: dict[str, bool | None] = dict.fromkeys(THINK_STEPS)
    steps["centroids"] = all(
        n in cents and _near(cents[n], b.center) for n, b in zip(names, boxes, strict=True)
    )
    frame = [(float(x), float(y)) for x, y in re.findall(_PAIR, m["frame"])]
    if task == "relative_direction":
        fwd, right = TASKS[task].local_frame(params, [])
    elif len(frame) != 2:
        return None
    else:
        fwd, right = frame if task == "vertical_direction" else frame[::-1]
        if names[0] in cents and names[1] in cents and cents[names[0]] != cents[names[1]]:
            axis = TASKS[task].axis(params, cents[names[0]], cents[names[1]])
            if task == "vertical_direction":
                steps["frame"] = _near(fwd, axis) and _near(right, geo.right_of(fwd))
            else:
                steps["frame"] = _near(right, axis) and _near(fwd, geo.forward_of(right))
        else:
            steps["frame"] = False
    v = (float(m["vx"]), float(m["vy"]))
    c, d = names[-2], names[-1]
    steps["v"] = c in cents and d in cents and _near(v, geo.sub(cents[c], cents[d]))
    depth = "front" if geo.dot(v, fwd) > 0 else "back"
    side = "right" if geo.dot(v, right) > 0 else "left"
    steps["signs"] = (m["depth"], m["side"]) == (depth, side)
    stated = f"{m['side'].capitalize()}-{m['depth'].capitalize()}"
    steps["quadrant"] = m["label"] == stated
    letters = re.findall(r"option ([A-D])\b", m["rest"])
    options = list(params.get("options", []))
    steps["option"] = (
        bool(letters)
        and m["label"] in options
        and letters[-1] == _as_answer(task, params, m["label"])
    )
    return steps


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
    t = TASKS[task]
    params, text = t.params(objects, variant), t.text(objects, variant)
    if t.kind == MC:
        pool = t.option_pool(option_pool)
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
    t = TASKS[task]
    problems = []
    named = t.unique_names(p)
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
    if t.kind == MC:
        if from_map != exact[0]:
            problems.append("the 0.1 m map gives a different answer")
        problems += t.problems(p, exact)
    else:
        value = float(exact[0])
        problems += t.problems(p, exact)
        shown_value = float(format_number(task, float(from_map)))  # as the target writes it
        err = abs(shown_value - value) / abs(value) if value else abs(shown_value)
        if err >= MAX_MAP_REL_ERROR:
            problems.append(f"the 0.1 m map answer is {err:.1%} off the exact answer")
    return problems


def generate_question(
    task: str,
    scene: CogMap,
    rng: random.Random,
    visible: set[str] | None = None,
    tries: int = 100,
) -> Question | None:
    """A random well-posed question of ``task`` about ``scene``, or None after ``tries`` attempts."""
    t = TASKS[task]
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
        drawn = t.draw(unique, categories, scene, rng)
        if drawn is None:
            return None
        objects, variant, pool = drawn
        q = make_question(task, objects, scene, rng, variant, pool)
        if not check_well_posed(q, scene, visible):
            return q
    return None
