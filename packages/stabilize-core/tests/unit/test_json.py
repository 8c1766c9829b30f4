"""The engine's JSON encoders: the fast one for its own events gives what the strict one does."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import stabilize._json
from stabilize._json import (
    ENCODING_ERRORS,
    describe_unencodable,
    dumps,
    dumps_known,
    loads,
    safe_text,
)
from stabilize.backends._rows import event_row
from stabilize.engine.messages import EventDraft

VALUES: list[Any] = [
    {},
    [],
    {"a": 1, "b": [1, 2.5, None, True, False], "c": {"d": "é\u2028\x00\x1f\x7f"}},
    {1: "int key", 2.5: "float key"},
    {False: "bool key"},
    {"big": 10**30, "small": 1e-07, "neg": -0.0, "huge": 1e300},
    (1, (2, 3)),
    {'x"None': 1},
    {None: 1, "n": {None: [1]}},
    "plain",
]


@pytest.mark.parametrize("value", VALUES)
def test_the_fast_encoder_reads_back_as_the_strict_one(value: Any) -> None:
    assert loads(dumps_known(value)) == loads(dumps(value))


@pytest.mark.parametrize("value", [{None: 1}, {"n": {None: [1]}}])
def test_what_the_fast_encoder_writes_differently_goes_through_the_strict_one(value: Any) -> None:
    assert dumps_known(value) == dumps(value)


def test_both_encoders_refuse_a_lone_surrogate() -> None:
    for encode in (dumps, dumps_known):
        with pytest.raises(ValueError, match="lone surrogate"):
            encode({"name": "\ud800"})


def test_progress_data_from_a_task_is_still_checked_strictly() -> None:
    when = datetime.datetime(2026, 1, 1)
    progress = EventDraft("custom.progress", "stage", "s", {"at": when})
    with pytest.raises(TypeError):
        progress.json()
    with pytest.raises(TypeError):
        event_row("wf", 1, [EventDraft("stage.started", "stage", "s", {}), progress], 0)
    # The engine's own events hold values of rows already checked; a None key keeps the
    # strict encoder's spelling.
    own = EventDraft("state.changed", "workflow", "wf", {"set": {None: 1}})
    assert own.json() == '{"set":{"null":1}}'


# -- values that cannot be stored (issue 13) ---------------------------------------------

JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
@example({"v": "\udc80"})
@example({"\ud800": 1})
@example([float("nan")])
@settings(max_examples=300, deadline=None)
def test_dumps_gives_utf8_text_or_refuses_with_a_located_reason(value):
    try:
        text = dumps(value)
    except ENCODING_ERRORS:
        problem = describe_unencodable(value, "value")
        assert problem is not None
        assert problem.startswith("value")
    else:
        text.encode("utf-8")  # what every database driver needs
        assert describe_unencodable(value, "value") is None


def test_describe_unencodable_names_the_path_to_the_bad_part():
    value = {"files": ["a", "b\udc80"], "ok": 1}
    problem = describe_unencodable(value, "outputs")
    assert problem is not None
    assert problem.startswith("outputs['files'][1]")
    assert "surrogate" in problem
    assert "(1, 2)" in (describe_unencodable({(1, 2): 0}, "outputs") or "")
    assert "of type set" in (describe_unencodable({"s": {1}}, "outputs") or "")


def test_safe_text_escapes_lone_surrogates_only():
    assert safe_text("plain") == "plain"
    assert safe_text("héllo") == "héllo"
    assert safe_text("bad \udc80") == "bad \\udc80"
    safe_text("x\ud800y").encode("utf-8")


@pytest.mark.parametrize("value", VALUES)
def test_dumps_writes_what_the_stdlib_encoder_writes(value: Any) -> None:
    # dumps keeps one C encoder instead of building one per call (JSONEncoder.encode):
    # the text must not change.
    expected = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
    ).encode(value)
    assert dumps(value) == expected


@pytest.mark.parametrize("use_c", [True, False])
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"x": float("nan")}, ValueError),
        ({"x": float("inf")}, ValueError),
        ({"x": object()}, TypeError),
        ({"x": {1, 2}}, TypeError),
        ({"x": datetime.datetime(2026, 1, 1)}, TypeError),
    ],
)
def test_dumps_refuses_what_json_does_not_have_with_or_without_the_c_encoder(
    monkeypatch: pytest.MonkeyPatch, use_c: bool, bad: Any, error: type[Exception]
) -> None:
    if not use_c:
        monkeypatch.setattr(stabilize._json, "_C_ENCODE", None)
    with pytest.raises(error):
        dumps(bad)
    assert dumps({"ok": [1, "é"]}) == '{"ok":[1,"é"]}'


def test_dumps_refuses_a_value_that_contains_itself() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        dumps({"loop": loop})
