"""The map text of spec section 1: exact formatting, lenient parsing, strict rejection."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from v2lo_utils.cogmap import (
    CogMap,
    MapParseError,
    format_map,
    format_ok,
    format_response,
    normalize_tags,
    parse_map,
    parse_response,
)

PAPER_MAP = CogMap.from_boxes(
    [
        ("fridge", (-10.2, 0.3, -9.4, 1.1)),
        ("armchair", (-5.6, 1.8, -4.8, 2.7)),
        ("dogbed", (-7.6, 5.4, -6.8, 6.4)),
        ("sofa", (-2.0, 1.6, -1.1, 3.7)),
        ("box", (-0.3, 0.9, 0.3, 1.3)),
    ]
)
PAPER_TEXT = (
    "<map>Establish a bird's-eye view : ["
    '{"object_name": "fridge", "bbox": [-10.2, 0.3, -9.4, 1.1]}, '
    '{"object_name": "armchair", "bbox": [-5.6, 1.8, -4.8, 2.7]}, '
    '{"object_name": "dogbed", "bbox": [-7.6, 5.4, -6.8, 6.4]}, '
    '{"object_name": "sofa", "bbox": [-2.0, 1.6, -1.1, 3.7]}, '
    '{"object_name": "box", "bbox": [-0.3, 0.9, 0.3, 1.3]}]</map>'
)


def test_format_map_is_the_paper_text():
    assert format_map(PAPER_MAP) == PAPER_TEXT
    assert format_map(PAPER_MAP, tags=False) == PAPER_TEXT[5:-6]


def test_format_rounds_to_one_decimal_without_negative_zero():
    m = CogMap.from_boxes([("chair", (-0.04, 1.26, 0.449, 2.0))])
    assert format_map(m, tags=False) == (
        'Establish a bird\'s-eye view : [{"object_name": "chair", "bbox": [0.0, 1.3, 0.4, 2.0]}]'
    )


def test_parse_the_paper_text():
    assert parse_map(PAPER_TEXT) == PAPER_MAP
    assert parse_map(PAPER_TEXT[5:-6]) == PAPER_MAP


@pytest.mark.parametrize(
    "text",
    [
        # typographic quotes, as in the paper's figure
        "Establish a bird’s-eye view : [{“object_name”: “sofa”, “bbox”: [-2.0, 1.6, -1.1, 3.7]}]",
        # single quotes
        "[{'object_name': 'sofa', 'bbox': [-2.0, 1.6, -1.1, 3.7]}]",
        # trailing commas
        '[{"object_name": "sofa", "bbox": [-2.0, 1.6, -1.1, 3.7,],},]',
        # missing prefix, extra whitespace, newlines
        '  \n [ {  "object_name" :"sofa" ,\n "bbox":[ -2.0 ,1.6, -1.1 , 3.7 ] } ]  ',
        # re-spaced prefix without the space before the colon
        'establish a bird\'s eye view: [{"object_name": "sofa", "bbox": [-2.0, 1.6, -1.1, 3.7]}]',
        # unicode minus, and tags with spaces
        '< map >[{"object_name": "sofa", "bbox": [−2.0, 1.6, −1.1, 3.7]}]</ map >',
    ],
)
def test_parse_accepts_what_models_emit(text):
    assert parse_map(text) == CogMap.from_boxes([("sofa", (-2.0, 1.6, -1.1, 3.7))])


def test_parse_accepts_ints_and_empty_list():
    assert parse_map('[{"object_name": "box", "bbox": [0, 1, 2, 3]}]').objects[0].bbox == (
        0,
        1,
        2,
        3,
    )
    assert parse_map("[]") == CogMap()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty map"),
        ("Establish a bird's-eye view :", "empty map"),
        ('{"object_name": "a", "bbox": [0, 0, 1, 1]}', "expected a list"),
        ('[{"object_name": "a"}]', "missing field 'bbox'"),
        ('[{"bbox": [0, 0, 1, 1]}]', "missing field 'object_name'"),
        ('[{"object_name": "a", "bbox": [0, 0, 1, 1], "z": 1}]', "unexpected field 'z'"),
        ('[{"object_name": "a", "bbox": [0, 0, 1]}]', "4 numbers"),
        ('[{"object_name": "a", "bbox": [0, 0, "1", 1]}]', "non-number"),
        ('[{"object_name": "a", "bbox": [0, 0, true, 1]}]', "non-number"),
        ('[{"object_name": "a", "bbox": [0, 0, NaN, 1]}]', "non-finite"),
        ('[{"object_name": "a", "bbox": [0, 0, 1e999, 1]}]', "non-finite"),
        ('[{"object_name": "a", "bbox": [2, 0, 1, 1]}]', "min <= max"),
        ('[{"object_name": "", "bbox": [0, 0, 1, 1]}]', "non-empty string"),
        ('[{"object_name": 3, "bbox": [0, 0, 1, 1]}]', "non-empty string"),
        ('[{"object_name": "a", "bbox": [0, 0, 1, 1]}] and more', "unexpected text"),
        ("Here is the map: []", "unexpected text"),
        ('[{"object_name": "a", "bbox": [0, 0, 1, 1]}', "unterminated"),
        ("[" * 5000, "nested too deeply"),
        ("[1, 2]", "item 1: expected an object"),
    ],
)
def test_parse_rejects_with_a_reason(text, message):
    with pytest.raises(MapParseError, match=message):
        parse_map(text)


def test_error_names_the_item():
    with pytest.raises(MapParseError, match="item 2"):
        parse_map('[{"object_name": "a", "bbox": [0, 0, 1, 1]}, {"object_name": "b"}]')


def test_parse_response_splits_parts():
    text = f"{PAPER_TEXT}\n<think> nearest is D </think>\n<answer> D </answer>"
    r = parse_response(text)
    assert r.cogmap == PAPER_MAP and r.map_error is None
    assert r.think == "nearest is D" and r.answer == "D" and r.format_ok


def test_parse_response_incomplete_and_bad_map():
    r = parse_response("<map>[{'object_name': 'a'}]</map><answer>B</answer><answer>C</answer>")
    assert r.cogmap is None and "missing field" in r.map_error
    assert r.answer == "C" and r.think is None and not r.format_ok
    r = parse_response("just text")
    assert r.map_text is None and r.map_error == "no <map> section" and r.answer is None
    assert parse_response(None).map_error == "completion is not a string"


def test_format_rule_is_the_papers():
    assert format_ok("<map>m</map><think>t</think><answer>a</answer>")
    assert format_ok("  < map >m</ map >\n\n<think>t</think> <answer>a</answer>\n")
    assert not format_ok("<map>m</map><answer>a</answer>")  # no think
    assert not format_ok("<think>t</think><map>m</map><answer>a</answer>")  # wrong order
    assert not format_ok("<map>m</map><think>t</think><answer>a</answer> trailing")
    assert normalize_tags("a < b / c > d") == "a<b/c>d"


def test_format_response_round_trip():
    text = format_response(PAPER_MAP, "think", "D")
    r = parse_response(text)
    assert r.format_ok and r.cogmap == PAPER_MAP and r.answer == "D"


# ---- properties ------------------------------------------------------------------------------

coord = st.integers(-200, 200).map(lambda i: i / 10)
names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
).filter(lambda s: s.strip() == s and s)


@st.composite
def cogmaps(draw):
    items = []
    for _ in range(draw(st.integers(0, 8))):
        x0, x1 = sorted((draw(coord), draw(coord)))
        y0, y1 = sorted((draw(coord), draw(coord)))
        items.append((draw(names), (x0, y0, x1, y1)))
    return CogMap.from_boxes(items)


@given(cogmaps())
def test_format_then_parse_is_identity(m):
    assert parse_map(format_map(m)) == m
    assert parse_response(format_response(m, "t", "A")).cogmap == m


@given(cogmaps(), st.floats(-50, 50), st.floats(-50, 50))
def test_rounded_maps_are_stable(m, dx, dy):
    moved = m.translated(dx, dy)
    assert parse_map(format_map(moved)) == moved.rounded()


FRAGMENTS = [
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    '"',
    "'",
    "“",
    "”",
    "‘",
    "’",
    "object_name",
    "bbox",
    "1",
    "-2.5",
    "1e999",
    "NaN",
    "true",
    "null",
    " ",
    "\n",
    "\\",
    "\\u12",
    "−",
    ".",
    "e",
    "Establish a bird's-eye view :",
    "<map>",
    "</map>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    '"object_name": "a"',
    '"bbox": [0, 0, 1, 1]',
    "9" * 400,
]
arbitrary = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=5000)
@given(arbitrary)
def test_parse_map_raises_only_map_parse_error(text):
    try:
        m = parse_map(text)
    except MapParseError:
        return
    assert isinstance(m, CogMap)


@settings(max_examples=5000)
@given(arbitrary)
def test_parse_response_never_raises(text):
    r = parse_response(text)
    assert (r.cogmap is None) == (r.map_error is not None)
    assert r.format_ok == format_ok(text)
