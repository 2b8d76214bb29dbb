"""PartialJSONParser: exact snapshots at every split point, errors, and the changes log."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncchat.partial_json import Change, PartialJSONError, PartialJSONParser

SAMPLES = [
    '{"city": "Boston", "days": 3}',
    '[1, 2.5, -3e2, 0, -0, 1E400, true, false, null, "x\\n\\u00e9\\ud83d\\ude00\\/"]',
    '"top"',
    "12",
    "-0.5e-3",
    ' {"a": {"b": [[], {}, [[1]]]}, "c": ""} \n',
    '"\\ud83d"',
    '"\\ud83dx\\ud83d\\n\\ude00"',
    '{"k\\"ey": "v\\\\", "": [true]}',
    '[{"a": 1}, {"a": 2}, "three", 4]',
    "{}",
    "[]",
    "null",
]


def extends(old: Any, new: Any) -> bool:
    """`new` is `old` with more arrived: keys and items kept, strings grown, scalars equal."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(
            k in new and extends(v, new[k]) for k, v in old.items()
        )
    if isinstance(old, list):
        return (
            isinstance(new, list)
            and len(new) >= len(old)
            and all(extends(a, b) for a, b in zip(old, new, strict=False))
        )
    if isinstance(old, str):
        return isinstance(new, str) and new.startswith(old)
    return type(old) is type(new) and old == new


def apply(document: dict[str, Any], change: Change) -> None:
    """Apply a change to {"root": ...}, as a UI would."""
    *parents, last = ("root", *change.path)
    target: Any = document
    for step in parents:
        target = target[step]
    if change.kind == "value":
        value = change.value
        if isinstance(target, list) and last == len(target):
            target.append(value)
        else:
            target[last] = value
    else:
        target[last] += change.value


def feed_all(pieces: list[str]) -> Any:
    """Feed the pieces, checking every snapshot and the changes; the final value."""
    parser = PartialJSONParser()
    previous: Any = None
    rebuilt: dict[str, Any] = {"root": None}
    for piece in pieces:
        for change in parser.feed(piece):
            apply(rebuilt, change)
        snapshot = json.loads(json.dumps(parser.value))  # a copy: the value is live
        if previous is not None:
            assert extends(previous, snapshot), (previous, snapshot)
        assert rebuilt["root"] == snapshot
        previous = snapshot
    value = parser.close()
    assert parser.done
    return value


def splits(text: str) -> list[list[str]]:
    """The text in one piece, in every two pieces, and one character at a time."""
    return [[text], *([text[:i], text[i:]] for i in range(1, len(text))), list(text)]


@pytest.mark.parametrize("text", SAMPLES)
def test_every_split_gives_json_loads(text: str) -> None:
    for pieces in splits(text):
        assert feed_all(pieces) == json.loads(text), pieces


def test_what_a_snapshot_shows() -> None:
    parser = PartialJSONParser()
    assert parser.value is None
    steps = [
        ("{", {}),
        ('"ci', {}),  # a key appears only once complete and its value started
        ('ty": ', {}),
        ('"', {"city": ""}),  # a string value shows as "" from its opening quote
        ("Bos", {"city": "Bos"}),
        ("\\", {"city": "Bos"}),  # an escape only once complete
        ("u00", {"city": "Bos"}),
        ("e9", {"city": "Bosé"}),
        ('", "n": 1', {"city": "Bosé"}),  # a number only once complete
        ("2", {"city": "Bosé"}),
        (",", {"city": "Bosé", "n": 12}),
        (' "list": [tr', {"city": "Bosé", "n": 12, "list": []}),
        ("ue", {"city": "Bosé", "n": 12, "list": [True]}),
        ("]}", {"city": "Bosé", "n": 12, "list": [True]}),
    ]
    for piece, expected in steps:
        parser.feed(piece)
        assert parser.value == expected, piece
    assert parser.done
    assert parser.close() == {"city": "Bosé", "n": 12, "list": [True]}


def test_a_surrogate_pair_appears_whole() -> None:
    parser = PartialJSONParser()
    parser.feed('"a\\ud83d')
    assert parser.value == "a"
    parser.feed("\\ude0")
    assert parser.value == "a"
    parser.feed('0b"')
    assert parser.close() == "a\U0001f600b"


def test_a_top_level_number_completes_at_close() -> None:
    parser = PartialJSONParser()
    parser.feed("12")
    assert parser.value is None and not parser.done
    assert parser.close() == 12


def test_the_changes_of_a_piece() -> None:
    parser = PartialJSONParser()
    assert parser.feed('{"a": "xy') == [
        Change((), "value", {}),
        Change(("a",), "value", ""),
        Change(("a",), "text", "xy"),
    ]
    assert parser.feed('z", "b": [1') == [Change(("a",), "text", "z"), Change(("b",), "value", [])]
    assert parser.feed("]}") == [Change(("b", 0), "value", 1)]


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ('{"a" 1}', 5),
        ("[1,]", 3),
        ("[1 2]", 3),
        ('{"a": tru}', 9),
        ("[01]", 1),
        ('{"a": 1,}', 8),
        ("{a: 1}", 1),
        ('"tab\there"', 4),
        ('"\\x"', 2),
        ('"\\u12g4"', 5),
        ("[1] 2", 4),
        ("]", 0),
        ("-", 0),
        ("[1.]", 1),
    ],
)
def test_invalid_json_names_the_position(text: str, position: int) -> None:
    for pieces in splits(text):
        parser = PartialJSONParser()
        with pytest.raises(PartialJSONError) as info:
            for piece in pieces:
                parser.feed(piece)
            parser.close()
        assert info.value.position == position, pieces
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a": "b', "[1, ", '"\\u00', "tru"])
def test_an_unfinished_text_fails_at_close(text: str) -> None:
    parser = PartialJSONParser()
    parser.feed(text)
    with pytest.raises(PartialJSONError, match=r"ends inside|holds no value"):
        parser.close()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    json_values,
    st.booleans(),
    st.sampled_from([None, 0, 2]),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_any_json_any_split(
    value: Any, ascii_only: bool, indent: int | None, cuts: list[int]
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    points = sorted({cut % (len(text) + 1) for cut in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert feed_all(pieces) == json.loads(text)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet='{}[]",:.-+eE0123456789 tnrufalsl\\u', max_size=30))
def test_anything_else_is_an_error_or_agrees_with_json_loads(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        expected = PartialJSONError
    parser = PartialJSONParser()
    try:
        for char in text:
            parser.feed(char)
        result = parser.close()
    except PartialJSONError:
        result = PartialJSONError
    assert result == expected or (result is not PartialJSONError and result == expected)
