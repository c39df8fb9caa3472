"""The cognitive map and the response format: text <-> boxes (spec section 1).

A completion has three parts, in order::

    <map>Establish a bird's-eye view : [{"object_name": "fridge", "bbox": [-10.2, 0.3, -9.4, 1.1]}]</map>
    <think> step-by-step computation over the map </think>
    <answer>D</answer>

Boxes are floor footprints ``[x_min, y_min, x_max, y_max]`` in meters in the map frame (origin at the
first sampled camera, +x right, +y forward). Text carries one decimal; :class:`CogMap` keeps full
precision so the exact ground truth and its 0.1 m rendering are both at hand.

Model output is untrusted: :func:`parse_map` never evaluates anything and raises only
:class:`MapParseError`; :func:`parse_response` raises nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from . import geometry as geo
from .geometry import Box

MAP_PREFIX = "Establish a bird's-eye view : "

# The paper's format rule (spec section 3): applied to the tag-normalised, stripped response.
# Kept as the statement of the rule; :func:`format_match` decides it in linear time.
FORMAT_RE = re.compile(r"<map>.*?</map>\s*<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
# Texts longer than this (characters) are not parsed: no map, no answer, format 0, reward 0.
# A model's completion is never near it (4 M characters is ~1 M tokens); below it every parser,
# extractor and reward runs in time linear in the text and agrees exactly with the regexes
# of the spec.
MAX_COMPLETION_CHARS = 4_000_000
_DELIM_SPLIT_RE = re.compile(r"([<>/])")
# For the fast path of normalize_tags: ASCII text as bytes, each delimiter mapped to "<" and
# each whitespace character to " " (one table lookup per byte), holds "< " or " <" exactly when
# some whitespace touches a delimiter.
_DELIM_SPACE_TABLE = bytes(
    ord("<") if chr(b) in "<>/" else ord(" ") if chr(b).isspace() else ord("x") for b in range(256)
)


def _may_have_spaced_delimiters(text: str) -> bool:
    if not text.isascii():
        return True
    marks = text.encode("ascii").translate(_DELIM_SPACE_TABLE)
    return b"< " in marks or b" <" in marks


class MapParseError(ValueError):
    """A map text that is not a list of {"object_name", "bbox"} objects; the message says why."""


def name_key(name: str) -> str:
    """How names are compared: case-insensitive, surrounding and repeated whitespace ignored."""
    return " ".join(name.lower().split())


@dataclass(frozen=True)
class ObjectBox:
    """One object of a map: its category name and floor footprint (m, map frame)."""

    name: str
    bbox: Box

    @property
    def center(self) -> geo.Vec:
        return geo.centroid(self.bbox)

    def rounded(self, ndigits: int = 1) -> ObjectBox:
        """The box with coordinates rounded as the map text writes them (0.1 m by default)."""
        return ObjectBox(self.name, tuple(_round(v, ndigits) for v in self.bbox))  # type: ignore[arg-type]

    def to_json(self) -> dict:
        return {"object_name": self.name, "bbox": list(self.bbox)}


@dataclass(frozen=True)
class CogMap:
    """A bird's-eye cognitive map: named footprints in the map frame (m)."""

    objects: tuple[ObjectBox, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))

    def __iter__(self) -> Iterator[ObjectBox]:
        return iter(self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    @classmethod
    def from_boxes(cls, items: Iterable[tuple[str, Box]]) -> CogMap:
        return cls(tuple(ObjectBox(n, tuple(map(float, b))) for n, b in items))  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, items: object, where: str = "map") -> CogMap:
        """Build from ``[{"object_name": ..., "bbox": [...]}, ...]``; errors name ``where`` and the item."""
        return cls(_validate(items, where))

    def to_json(self) -> list[dict]:
        return [o.to_json() for o in self.objects]

    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    def find(self, name: str) -> ObjectBox | None:
        """The first object with this name (compared with :func:`name_key`), or None."""
        key = name_key(name)
        for o in self.objects:
            if name_key(o.name) == key:
                return o
        return None

    def count(self, name: str) -> int:
        key = name_key(name)
        return sum(1 for o in self.objects if name_key(o.name) == key)

    def subset(self, names: Iterable[str]) -> CogMap:
        """Every object whose name is among ``names``, in the order of ``names``; instances of one
        name from front-left to back-right (by center y, then x), so the order is a function of
        the names and the geometry alone."""
        out: list[ObjectBox] = []
        for key in dict.fromkeys(name_key(n) for n in names):
            same = [o for o in self.objects if name_key(o.name) == key]
            out += sorted(same, key=lambda o: (o.center[1], o.center[0]))
        return CogMap(tuple(out))

    def rounded(self, ndigits: int = 1) -> CogMap:
        """The map as its text states it: coordinates rounded to 0.1 m by default."""
        return CogMap(tuple(o.rounded(ndigits) for o in self.objects))

    def translated(self, dx: float, dy: float) -> CogMap:
        return CogMap(tuple(ObjectBox(o.name, geo.translate(o.bbox, dx, dy)) for o in self.objects))

    def extent(self) -> Box:
        """The smallest box holding every footprint (m)."""
        return geo.union_extent([o.bbox for o in self.objects])

    def to_grid(self, n: int = 10, extent: Box | None = None) -> CogMap:
        """The grid-map view (spec section 1): each object's center snapped to the center of its cell
        of an n x n grid over ``extent`` (default: this map's extent), as a zero-size box.

        Sizes are lost on purpose: that is what a grid map cannot tell.
        """
        ext = extent if extent is not None else self.extent()
        out = []
        for o in self.objects:
            cx, cy = geo.grid_cell_center(geo.grid_cell(o.center, ext, n), ext, n)
            out.append(ObjectBox(o.name, (cx, cy, cx, cy)))
        return CogMap(tuple(out))


def _round(value: float, ndigits: int) -> float:
    r = round(value, ndigits)
    return 0.0 if r == 0 else r  # no negative zero


def _num(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _map_text(header: str, cogmap: CogMap, key: str, values, tags: bool) -> str:
    """``header[{"object_name": ..., key: [values(o)]}, ...]``, in <map> tags when ``tags``."""
    items = ", ".join(
        f'{{"object_name": {json.dumps(o.name, ensure_ascii=False)}, '
        f'"{key}": [{", ".join(values(o))}]}}'
        for o in cogmap.objects
    )
    body = f"{header}[{items}]"
    return f"<map>{body}</map>" if tags else body


def format_map(cogmap: CogMap, tags: bool = True) -> str:
    """The map text of spec section 1, numbers with one decimal; wrapped in <map> tags by default."""
    return _map_text(MAP_PREFIX, cogmap, "bbox", lambda o: map(_num, o.bbox), tags)


def format_grid_map(cogmap: CogMap, n: int, extent: Box, tags: bool = True) -> str:
    """The grid-map text of the baseline (spec section 1): each object's center as the
    (column, row) of an n x n grid over ``extent`` (m, map frame); column 0 at the smallest x,
    row 0 at the smallest y. The header states the cell size so distances can be computed."""
    cw, ch = (extent[2] - extent[0]) / n, (extent[3] - extent[1]) / n
    header = f"Establish a {n} x {n} grid of {cw:.2f} x {ch:.2f} m cells : "
    cell = lambda o: map(str, geo.grid_cell(o.center, extent, n))  # noqa: E731
    return _map_text(header, cogmap, "cell", cell, tags)


def format_response(cogmap: CogMap, think: str, answer: str) -> str:
    """A full target: ``<map>...</map><think>...</think><answer>...</answer>``."""
    return f"{format_map(cogmap)}<think>{think}</think><answer>{answer}</answer>"


# ---------------------------------------------------------------------------------------------
# Parsing

_MAP_TAGS_RE = re.compile(r"^<\s*map\s*>(.*?)<\s*/\s*map\s*>$", re.DOTALL)
_PREFIX_RE = re.compile(
    r"^establish\s+a\s+bird\s*['’‘`´]?\s*s[\s-]*eye[\s-]*view\s*:?\s*", re.IGNORECASE
)
_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<punct>[\[\]{}:,])
      | "(?P<dq>(?:[^"\\]|\\.)*)"
      | '(?P<sq>[^']*)'
      | “(?P<tdq>[^”]*)”
      | ‘(?P<tsq>[^’]*)’
      | (?P<num>[-+−]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    )""",
    re.VERBOSE,
)
_SPACE_RE = re.compile(r"\s*")
_END = object()


def parse_map(text: str) -> CogMap:
    """Parse a map as models write it, with or without ``<map>`` tags and the prefix.

    Accepted beyond strict JSON: single or typographic quotes, trailing commas, integers, a
    missing or re-spaced prefix, extra whitespace, a unicode minus. Anything else raises
    :class:`MapParseError` saying what is wrong (unknown keys, a bbox that is not four finite
    numbers with min <= max, trailing text, ...).
    """
    if not isinstance(text, str):
        raise MapParseError(f"map text must be a string, got {type(text).__name__}")
    if len(text) > MAX_COMPLETION_CHARS:
        raise MapParseError(f"map text longer than {MAX_COMPLETION_CHARS} characters")
    s = text.strip()
    m = _MAP_TAGS_RE.match(s)
    if m:
        s = m.group(1).strip()
    s = _PREFIX_RE.sub("", s, count=1)
    if not s:
        raise MapParseError("empty map: expected a list of objects")
    try:
        data = json.loads(s)
    except (ValueError, RecursionError):
        data = _Lenient(s).parse()
    return CogMap(_validate(data, "map"))


class _Lenient:
    """A tiny recursive-descent reader for JSON-like lists with lenient quotes and commas."""

    MAX_DEPTH = 4

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> object:
        value = self.value(0)
        if self.token()[0] != "end":
            raise MapParseError(f"unexpected text after the map at character {self.pos}")
        return value

    def token(self) -> tuple[str, object]:
        self.pos = _SPACE_RE.match(self.text, self.pos).end()
        if self.pos >= len(self.text):
            return "end", _END
        m = _TOKEN_RE.match(self.text, self.pos)
        if not m:
            snippet = self.text[self.pos : self.pos + 20].strip()
            raise MapParseError(f"unexpected text at character {self.pos}: {snippet!r}")
        self.pos = m.end()
        kind = m.lastgroup
        raw = m.group(kind)
        if kind == "punct":
            return raw, raw
        if kind == "num":
            return "value", float(raw.replace("−", "-"))
        if kind == "dq":
            try:
                return "value", json.loads(f'"{raw}"')
            except ValueError as err:
                raise MapParseError(f"bad string escape near character {self.pos}") from err
        return "value", raw

    def value(self, depth: int) -> object:
        if depth > self.MAX_DEPTH:
            raise MapParseError("map is nested too deeply")
        kind, val = self.token()
        if kind == "[":
            return self.sequence(depth, "]", self.value)
        if kind == "{":
            return dict(self.sequence(depth, "}", self.pair))
        if kind == "value":
            return val
        raise MapParseError(f"expected a value at character {self.pos}, found {kind!r}")

    def pair(self, depth: int) -> tuple[object, object]:
        kind, key = self.token()
        if kind != "value" or not isinstance(key, str):
            raise MapParseError(f"expected a quoted key at character {self.pos}")
        if self.token()[0] != ":":
            raise MapParseError(f"expected ':' after key {key!r}")
        return key, self.value(depth)

    def sequence(self, depth: int, close: str, item) -> list:
        out: list = []
        while True:
            save = self.pos
            kind, _ = self.token()
            if kind == close:
                return out
            if kind == "end":
                raise MapParseError(f"unterminated {'list' if close == ']' else 'object'}")
            self.pos = save
            out.append(item(depth + 1))
            kind, _ = self.token()
            if kind == close:
                return out
            if kind == "end":
                raise MapParseError(f"unterminated {'list' if close == ']' else 'object'}")
            if kind != ",":
                raise MapParseError(f"expected ',' or {close!r} at character {self.pos}")


def _validate(data: object, where: str) -> tuple[ObjectBox, ...]:
    if not isinstance(data, list):
        raise MapParseError(f"{where}: expected a list of objects, got {type(data).__name__}")
    out = []
    for i, item in enumerate(data, start=1):
        at = f"{where}: item {i}"
        if not isinstance(item, dict):
            raise MapParseError(f"{at}: expected an object, got {type(item).__name__}")
        extra = set(item) - {"object_name", "bbox"}
        if extra:
            raise MapParseError(f"{at}: unexpected field {sorted(map(str, extra))[0]!r}")
        for key in ("object_name", "bbox"):
            if key not in item:
                raise MapParseError(f"{at}: missing field {key!r}")
        name = item["object_name"]
        if not isinstance(name, str) or not name.strip():
            raise MapParseError(f"{at}: field 'object_name' must be a non-empty string")
        out.append(ObjectBox(name.strip(), _bbox(item["bbox"], at)))
    return tuple(out)


def _bbox(raw: object, at: str) -> Box:
    if not isinstance(raw, (list, tuple)) or len(raw) != 4:
        raise MapParseError(f"{at}: field 'bbox' must be a list of 4 numbers")
    vals = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MapParseError(f"{at}: field 'bbox' holds a non-number {v!r:.20}")
        try:
            f = float(v)
        except OverflowError as err:
            raise MapParseError(f"{at}: field 'bbox' holds a number too large") from err
        if not math.isfinite(f):
            raise MapParseError(f"{at}: field 'bbox' holds a non-finite number")
        vals.append(f)
    x0, y0, x1, y1 = vals
    if x0 > x1 or y0 > y1:
        raise MapParseError(
            f"{at}: field 'bbox' must be [x_min, y_min, x_max, y_max] with min <= max"
        )
    return (x0, y0, x1, y1)


# ---------------------------------------------------------------------------------------------
# Whole responses

_OPEN_RE = {t: re.compile(rf"<\s*{t}\s*>") for t in ("map", "think", "answer")}
_CLOSE_RE = {t: re.compile(rf"<\s*/\s*{t}\s*>") for t in ("map", "think", "answer")}


def tag_contents(text: str, tag: str) -> Iterator[str]:
    """The contents of every ``<tag>...</tag>`` (tags may hold spaces: ``< / tag >``), exactly what
    ``re.findall(r"<\\s*tag\\s*>(.*?)<\\s*/\\s*tag\\s*>", text, re.DOTALL)`` returns, in one
    linear pass. (The regex rescans to the end of the text from every unclosed opening tag,
    quadratic on looped output; here an opening tag without a closing one after it ends the
    scan, since no later opening tag can have one either.)"""
    opening, closing = _OPEN_RE[tag], _CLOSE_RE[tag]
    pos = 0
    while (o := opening.search(text, pos)) is not None:
        c = closing.search(text, o.end())
        if c is None:
            return
        yield text[o.end() : c.start()]
        pos = c.end()


def first_tag(text: str, tag: str) -> str | None:
    """The content of the first ``<tag>...</tag>``, or None."""
    return next(tag_contents(text, tag), None)


def last_tag(text: str, tag: str) -> str | None:
    """The content of the last ``<tag>...</tag>``, or None."""
    found = None
    for found in tag_contents(text, tag):  # noqa: B007 - the last one is wanted
        pass
    return found


def normalize_tags(text: str) -> str:
    """The paper's normalisation: delete whitespace on both sides of every '<', '>' and '/'.

    Same result as ``re.sub(r"\\s*(<|>|/)\\s*", r"\\1", text)`` (str.strip and the regex's \\s
    agree on every code point), several times faster: split at the delimiters, strip the pieces.
    """
    if not _may_have_spaced_delimiters(text):  # nothing to delete: most completions
        return text
    parts = _DELIM_SPLIT_RE.split(text)
    last = len(parts) - 1
    if last == 0:
        return text
    parts[0] = parts[0].rstrip()
    parts[last] = parts[last].lstrip()
    for i in range(2, last, 2):
        parts[i] = parts[i].strip()
    return "".join(parts)


def format_match(normalised: str) -> bool:
    """``FORMAT_RE.fullmatch(normalised)`` in linear time, for text that :func:`normalize_tags`
    made (no whitespace touches a '<' or '>', so each ``\\s*`` of the rule matches nothing).

    The text must open with <map> and end with </answer>; the earliest ``</map><think>`` and,
    after it, the earliest ``</think><answer>`` leave the most room for what follows, so a
    decomposition exists exactly when they do and the second ends before the closing </answer>.
    (The regex's three lazy groups under fullmatch backtrack: seconds on 10 KB of looped tags.)
    """
    if not (normalised.startswith("<map>") and normalised.endswith("</answer>")):
        return False
    first = normalised.find("</map><think>", 5)
    if first < 0:
        return False
    second = normalised.find("</think><answer>", first + 13)
    return second >= 0 and second + 16 <= len(normalised) - 9


def format_ok(text: str) -> bool:
    """The paper's format rule: the normalised, stripped response is exactly map, think, answer."""
    if not isinstance(text, str) or len(text) > MAX_COMPLETION_CHARS:
        return False
    return format_match(normalize_tags(text).strip())


@dataclass(frozen=True)
class Response:
    """A completion split into its parts. ``answer`` is the content of the LAST answer tag
    (benchmark extraction); ``cogmap`` is None when there is no map or it does not parse."""

    map_text: str | None
    cogmap: CogMap | None
    map_error: str | None
    think: str | None
    answer: str | None
    format_ok: bool


def parse_response(text: str) -> Response:
    """Split a completion into map, think and answer; never raises."""
    if not isinstance(text, str):
        return Response(None, None, "completion is not a string", None, None, False)
    if len(text) > MAX_COMPLETION_CHARS:
        error = f"completion longer than {MAX_COMPLETION_CHARS} characters: not parsed"
        return Response(None, None, error, None, None, False)
    map_text = first_tag(text, "map")
    cogmap, error = None, "no <map> section"
    if map_text is not None:
        try:
            cogmap, error = parse_map(map_text), None
        except MapParseError as err:
            error = str(err)
    think, answer = first_tag(text, "think"), last_tag(text, "answer")
    return Response(
        map_text=map_text,
        cogmap=cogmap,
        map_error=error,
        think=think.strip() if think is not None else None,
        answer=answer.strip() if answer is not None else None,
        format_ok=format_ok(text),
    )
