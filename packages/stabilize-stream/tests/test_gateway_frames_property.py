"""Property: any text a client sends parses to a valid frame or to a bad-frame error.

Never another exception: an exception other than ``ProtocolError`` would escape the
connection's handler. Each test runs ``EXAMPLES`` generated frames plus its ``@example``s.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize.streaming.gateway._protocol import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SEQUENCE,
    MAX_TIME_MS,
    ErrorCode,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    error_frame,
    parse_frame,
    subscribed_frame,
)

EXAMPLES = 200

# Integers of every size JSON can spell (json.dumps refuses more than 4300 digits).
integers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, MAX_SEQUENCE, MAX_SEQUENCE + 1, MAX_TIME_MS, MAX_TIME_MS + 1]),
    st.integers(10**20, 10**60),
    st.integers(-(10**60), -(10**20)),
)
scalars = st.one_of(
    st.none(), st.booleans(), integers, st.floats(allow_nan=True, allow_infinity=True), st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)
FIELDS = ["type", "id", "workflow_id", "application", "all", "since", "cursors", "since_time"]
frame_like = st.dictionaries(
    st.sampled_from([*FIELDS, "data", "x"]),
    st.one_of(
        st.sampled_from(["subscribe", "unsubscribe", "ping", "s", "wf_1", "app"]),
        json_values,
        st.dictionaries(st.text(max_size=5), integers | json_values, max_size=3),
    ),
)


def check(text: str) -> None:
    """The property: a valid frame, or a ``ProtocolError`` that makes a JSON error frame."""
    try:
        frame = parse_frame(text)
    except ProtocolError as exc:
        error = exc
    else:
        check_frame(frame)
        return
    assert isinstance(error.code, ErrorCode)
    assert error.message
    assert json.loads(error_frame(error))["code"] == error.code.value


def check_frame(frame: object) -> None:
    assert isinstance(frame, Subscribe | Unsubscribe | Ping)
    if isinstance(frame, Ping):
        return
    assert isinstance(frame.id, str)
    assert 1 <= len(frame.id) <= MAX_ID_LENGTH
    if isinstance(frame, Subscribe):
        targets = [frame.workflow_id is not None, frame.application is not None]
        assert sum(targets) + frame.all_workflows == 1
        for name in (frame.workflow_id, frame.application, *frame.cursors):
            if name is not None:
                assert 1 <= len(name) <= MAX_NAME_LENGTH
                assert "\x00" not in name
                name.encode()  # UTF-8 text: the database can be asked about it
        for number in (frame.since, *frame.cursors.values()):
            assert type(number) is int
            assert 0 <= number <= MAX_SEQUENCE
        if frame.since_time is not None:
            assert type(frame.since_time) is int
            assert 0 <= frame.since_time <= MAX_TIME_MS
        json.loads(subscribed_frame(frame, frame.since_time))


def subscribe(**fields: Any) -> str:
    return json.dumps({"type": "subscribe", "id": "s", **fields})


@settings(max_examples=EXAMPLES, deadline=None)
@given(frame_like)
@example({"type": "subscribe", "id": "s", "workflow_id": "w", "since": 10**26})
@example({"type": "subscribe", "id": "s", "workflow_id": "w", "since": 2**63})
@example({"type": "subscribe", "id": "s", "workflow_id": "w", "since": True})
@example({"type": "subscribe", "id": "s", "workflow_id": "w", "since": 1.5})
@example({"type": "subscribe", "id": "s", "all": True, "since_time": 2**80})
@example({"type": "subscribe", "id": "s", "all": True, "since_time": 1.7e12})
@example({"type": "subscribe", "id": "s", "all": True, "since_time": False})
@example({"type": "subscribe", "id": "s", "all": True, "cursors": {"w": 10**26}})
@example({"type": "subscribe", "id": "s", "all": True, "cursors": {"w": True}})
@example({"type": "subscribe", "id": "s", "all": True, "cursors": {"": 1}})
@example({"type": "subscribe", "id": "s", "workflow_id": "a\x00b"})
@example({"type": "subscribe", "id": "s", "application": "\ud800"})
@example({"type": "subscribe", "id": "s", "all": True, "cursors": {"\ud800": 1}})
@example({"type": "subscribe", "id": "\ud800", "all": True})
@example({"type": "ping", "data": float("nan")})
def test_frame_like_objects(frame: dict[str, Any]) -> None:
    check(json.dumps(frame))


@settings(max_examples=EXAMPLES, deadline=None)
@given(json_values)
@example(float("inf"))
@example([])
def test_any_json_value(value: Any) -> None:
    check(json.dumps(value))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text() | st.binary().map(lambda raw: raw.decode("utf-8", errors="replace")))
@example("")
@example("{oops")
@example("[" * 100_000)
@example('{"type": "subscribe", "id": "s", "workflow_id": "w", "since": 1' + "0" * 5000 + "}")
@example(subscribe(all=True).replace("true", "NaN"))
@example(subscribe(workflow_id="w", since=1).replace(": 1}", ": Infinity}"))
@example(subscribe(workflow_id="w", since=1).replace(": 1}", ": -0.0}"))
@example('{"type": "subscribe", "type": "ping"}')
def test_any_text(text: str) -> None:
    check(text)
