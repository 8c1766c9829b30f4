"""Properties of the row diffs of the event log (stabilize/events/diff.py) over generated JSON.

Replay is exact only if applying the diff of ``a`` to ``b`` gives ``b`` to the last type:
``1``, ``1.0`` and ``True`` compare equal in Python and are three different JSON values.
So documents are compared by their encoding with sorted keys, which tells them apart
(key order is not part of a JSON object, nor of a diff: an unchanged key keeps its place).
"""

from __future__ import annotations

import copy
import json
from enum import IntEnum, StrEnum
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize._json import dumps, dumps_known, loads
from stabilize.events.diff import apply, diff

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, 1, -1, 0.0, -0.0, 1.0, True, False, 10**30, 1e-7, 2**53 + 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
keys = st.text(max_size=4)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(keys, json_values, max_size=6)


def retyped(value: Any) -> Any:
    """The same number as another JSON type (equal in Python, not in JSON)."""
    if type(value) is bool:
        return int(value)
    if type(value) is int:
        return float(value) if abs(value) < 2**53 else value
    if type(value) is float:
        return -value if value == 0 else value
    return value


@st.composite
def changed(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with some parts changed the way a workflow's rows change."""
    how = draw(st.sampled_from(["keep", "keep", "replace", "retype", "inside"]))
    if how == "keep":
        return value
    if how == "replace":
        return draw(json_values)
    if how == "retype" or depth > 6:
        return retyped(value)
    if type(value) is dict:
        out = {k: draw(changed(v, depth + 1)) for k, v in value.items()}
        for key in draw(st.lists(st.sampled_from(sorted(value)), max_size=2)) if value else []:
            out.pop(key, None)
        out.update(draw(st.dictionaries(keys, json_values, max_size=2)))
        return out
    if type(value) is list:
        items = [draw(changed(v, depth + 1)) for v in value]
        grown = draw(st.lists(json_values, max_size=3))  # a log or a conversation
        return items + grown if draw(st.booleans()) else items[: draw(st.integers(0, len(items)))]
    return retyped(value)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    old = draw(documents)
    new = draw(changed(old))
    return old, new if type(new) is dict else {"replaced": new}


def deep(levels: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(levels):
        value = {"d": value}
    return {"deep": value}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


def assert_exactly(got: Any, expected: Any) -> None:
    assert got == expected
    assert canonical(got) == canonical(expected)  # 1 vs 1.0 vs True, -0.0


@settings(max_examples=200, deadline=None)
@given(pairs())
@example(({"a": True}, {"a": 1}))
@example(({"a": 1}, {"a": 1.0}))
@example(({"a": 0.0}, {"a": -0.0}))
@example(({"a": [1]}, {"a": [True, 2]}))
@example(({"a": [{"x": 1}]}, {"a": [{"x": True}]}))
@example(({"a": {"b": [0, {"c": 1.0}]}}, {"a": {"b": [0, {"c": 1}]}}))
@example((deep(300), deep(299)))
@example(({"0": None, "": None}, {"": None, "0": None}))
def test_applying_the_diff_gives_the_new_document_exactly(
    pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    old, new = pair
    before, wanted = copy.deepcopy(old), copy.deepcopy(new)
    change = diff(old, new)
    assert_exactly(apply(old, change), wanted)
    assert dumps(old) == dumps(before)  # neither input is changed
    assert dumps(new) == dumps(wanted)


@settings(max_examples=200, deadline=None)
@given(documents)
@example(deep(300))
def test_a_document_diffed_with_itself_or_its_json_is_empty(doc: dict[str, Any]) -> None:
    assert diff(doc, doc) == {}
    assert diff(doc, copy.deepcopy(doc)) == {}
    assert diff(doc, loads(dumps(doc))) == {}


@settings(max_examples=200, deadline=None)
@given(pairs())
@example(({"a": 1}, {"a": True}))
def test_a_diff_read_back_from_the_log_applies_exactly(
    pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """What the engine writes (``dumps_known`` for its own events) and reads back."""
    old, new = pair
    change = diff(old, new)
    for encoded in (dumps_known(change), dumps(change)):
        assert_exactly(apply(loads(dumps(old)), loads(encoded)), loads(dumps(new)))


# The engine diffs the row as stored (parsed JSON) against the live row, whose keys may be
# ints, bools or None and whose sequences may be tuples. Letters only in string keys: no
# string key spells what JSON makes of another key ("1", "true", "null").
live_keys = st.one_of(st.text("abcdé", max_size=3), st.integers(), st.booleans(), st.none())
live_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(live_keys, inner, max_size=4)
    ),
    max_leaves=20,
)
live_documents = st.dictionaries(live_keys, live_values, max_size=6)


@settings(max_examples=200, deadline=None)
@given(live_documents, live_documents)
@example({"outputs": {1: "a"}}, {"outputs": {1: "a", None: True}})
@example({"t": (1, 2)}, {"t": (1, 2), 2: [1]})
def test_a_diff_from_the_stored_row_to_the_live_row_replays_to_the_stored_json(
    previous: dict[Any, Any], live: dict[Any, Any]
) -> None:
    stored = loads(dumps(previous))
    change = loads(dumps_known(diff(stored, live)))
    assert_exactly(apply(stored, change), loads(dumps(live)))


class Colour(StrEnum):
    RED = "red"


class Level(IntEnum):
    ONE = 1


def test_enums_equal_to_what_json_stored_are_not_changes() -> None:
    """A StrEnum is written as its string and an IntEnum as its int: nothing to record."""
    stored = {"c": {"colour": "red", "level": 1, "levels": [1, 1.5]}}
    live = {"c": {"colour": Colour.RED, "level": Level.ONE, "levels": [Level.ONE, 1.5]}}
    assert diff(stored, live) == {}
    was_true = {"c": {"colour": "red", "level": True, "levels": [1, 1.5]}}
    assert diff(was_true, live) == {"sub": {"c": {"set": {"level": Level.ONE}}}}


@settings(max_examples=300, deadline=None)
@given(live_values)
@example({None: 1, "n": {None: [1]}})
@example({True: 1, 1.5: 2, 10**30: 3, -0.0: 4})
@example([1e16, 1e-7, -0.0, 2**63, -(2**63) - 1, "\u2028\ud7ff\x00"])
def test_the_engines_two_encoders_write_what_reads_back_the_same(value: Any) -> None:
    """Events are written with ``dumps_known``, rows with ``dumps``: one JSON value."""
    assert canonical(loads(dumps_known(value))) == canonical(loads(dumps(value)))
