"""Client frames are parsed and validated with errors that say what is wrong and where."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stabilize.models.event import Event
from stabilize.streaming import gateway
from stabilize.streaming.gateway._protocol import (
    ErrorCode,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    error_frame,
    event_body,
    event_frame,
    parse_frame,
    resync_frame,
    subscribed_frame,
)


def test_gateway_exports() -> None:
    assert sorted(gateway.__all__) == [
        "ErrorCode",
        "Gateway",
        "GatewayConfigError",
        "PROTOCOL_VERSION",
        "TOKEN_ENV",
    ]
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "subscribe", "id": "a", "workflow_id": "wf"}, Subscribe("a", workflow_id="wf")),
        (
            {"type": "subscribe", "id": "a", "workflow_id": "wf", "since": 7},
            Subscribe("a", workflow_id="wf", since=7),
        ),
        (
            {"type": "subscribe", "id": "b", "application": "app", "since_time": 5},
            Subscribe("b", application="app", since_time=5),
        ),
        (
            {"type": "subscribe", "id": "c", "all": True, "cursors": {"w1": 3, "w2": 0}},
            Subscribe("c", all_workflows=True, cursors={"w1": 3, "w2": 0}),
        ),
        ({"type": "unsubscribe", "id": "a"}, Unsubscribe("a")),
        ({"type": "ping"}, Ping()),
        ({"type": "ping", "data": [1, "x"]}, Ping([1, "x"])),
    ],
)
def test_valid_frames(frame: dict[str, Any], expected: object) -> None:
    assert parse_frame(json.dumps(frame)) == expected


@pytest.mark.parametrize(
    ("text", "code", "field", "message"),
    [
        ("{not json", ErrorCode.BAD_FRAME, None, "not valid JSON: Expecting property name"),
        ("[1, 2]", ErrorCode.BAD_FRAME, None, "must be a JSON object, not an array"),
        ('"subscribe"', ErrorCode.BAD_FRAME, None, "must be a JSON object, not a string"),
        ("{}", ErrorCode.BAD_FRAME, "type", "frame has no 'type' field"),
        ('{"type": 3}', ErrorCode.BAD_FRAME, "type", "'type' must be a string, not a number"),
        ('{"type": "subscrib"}', ErrorCode.UNKNOWN_TYPE, "type", 'unknown frame type "subscrib"'),
        ('{"type": "ping", "x": 1}', ErrorCode.BAD_FRAME, "x", 'unknown field "x" in a ping'),
        (
            '{"type": "subscribe", "workflow_id": "w"}',
            ErrorCode.BAD_FRAME,
            "id",
            "a subscribe frame needs an 'id'",
        ),
        ('{"type": "unsubscribe", "id": ""}', ErrorCode.BAD_FRAME, "id", "'id' must be a string"),
        ('{"type": "unsubscribe", "id": 5}', ErrorCode.BAD_FRAME, "id", "'id' must be a string"),
        (
            '{"type": "subscribe", "id": "a"}',
            ErrorCode.BAD_FRAME,
            "workflow_id",
            "exactly one of 'workflow_id', 'application', 'all'",
        ),
        (
            '{"type": "subscribe", "id": "a", "workflow_id": "w", "all": true}',
            ErrorCode.BAD_FRAME,
            "all",
            "(got workflow_id, all)",
        ),
        (
            '{"type": "subscribe", "id": "a", "all": false}',
            ErrorCode.BAD_FRAME,
            "all",
            "'all' must be true",
        ),
        (
            '{"type": "subscribe", "id": "a", "workflow_id": ""}',
            ErrorCode.BAD_FRAME,
            "workflow_id",
            "'workflow_id' must be a string of 1 to 256",
        ),
        (
            '{"type": "subscribe", "id": "a", "workflow_id": "w", "since": -1}',
            ErrorCode.BAD_FRAME,
            "since",
            "'since' must be an integer from 0 to 9223372036854775807, not -1",
        ),
        (
            '{"type": "subscribe", "id": "a", "workflow_id": "w", "since": true}',
            ErrorCode.BAD_FRAME,
            "since",
            "not true",
        ),
        (
            '{"type": "subscribe", "id": "a", "workflow_id": "w", "since": "4"}',
            ErrorCode.BAD_FRAME,
            "since",
            'not "4"',
        ),
        (
            '{"type": "subscribe", "id": "a", "workflow_id": "w", "cursors": {}}',
            ErrorCode.BAD_FRAME,
            "cursors",
            "'cursors' applies to application and all subscriptions",
        ),
        (
            '{"type": "subscribe", "id": "a", "all": true, "since": 3}',
            ErrorCode.BAD_FRAME,
            "since",
            "'since' applies to workflow subscriptions",
        ),
        (
            '{"type": "subscribe", "id": "a", "all": true, "cursors": [1]}',
            ErrorCode.BAD_FRAME,
            "cursors",
            "'cursors' must be an object {workflow_id: sequence}, not an array",
        ),
        (
            '{"type": "subscribe", "id": "a", "all": true, "cursors": {"w": -2}}',
            ErrorCode.BAD_FRAME,
            "cursors.w",
            'cursors["w"] must be an integer from 0 to 9223372036854775807, not -2',
        ),
        (
            '{"type": "subscribe", "id": "a", "application": "x", "since_time": 1.5}',
            ErrorCode.BAD_FRAME,
            "since_time",
            "'since_time' must be an integer from 0 to 32503680000000, not 1.5",
        ),
        ("[" * 100_000, ErrorCode.BAD_FRAME, None, "frame is"),
    ],
)
def test_invalid_frames(text: str, code: ErrorCode, field: str | None, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(text)
    assert caught.value.code is code
    assert caught.value.field == field
    assert message in caught.value.message


def test_error_frame_names_the_subscription_and_field() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_frame('{"type": "subscribe", "id": "mine", "workflow_id": "w", "since": -1}')
    assert json.loads(error_frame(caught.value)) == {
        "type": "error",
        "code": "bad_frame",
        "message": "'since' must be an integer from 0 to 9223372036854775807, not -1",
        "id": "mine",
        "field": "since",
    }


def test_event_frame_is_one_json_object() -> None:
    event = Event("wf", 3, "stage.started", "stage", "st", 1234, {"ref_id": "a", "ü": "\u2028"})
    frame = json.loads(event_frame(json.dumps('id "quoted"').encode(), event_body(event)))
    assert frame == {
        "type": "event",
        "id": 'id "quoted"',
        "workflow_id": "wf",
        "sequence": 3,
        "event_type": "stage.started",
        "entity_type": "stage",
        "entity_id": "st",
        "timestamp": 1234,
        "data": {"ref_id": "a", "ü": "\u2028"},
    }


def test_acks_and_resyncs() -> None:
    wf = Subscribe("a", workflow_id="w", since=4)
    assert json.loads(subscribed_frame(wf)) == {
        "type": "subscribed",
        "id": "a",
        "workflow_id": "w",
        "since": 4,
    }
    app = Subscribe("b", application="x")
    assert json.loads(subscribed_frame(app, 99)) == {
        "type": "subscribed",
        "id": "b",
        "application": "x",
        "since_time": 99,
    }
    assert json.loads(resync_frame(wf, reason="r", since=9)) == {
        "type": "resync",
        "id": "a",
        "reason": "r",
        "workflow_id": "w",
        "since": 9,
    }
    everything = Subscribe("c", all_workflows=True)
    assert json.loads(resync_frame(everything, reason="r", cursors={"w": 2}, since_time=5)) == {
        "type": "resync",
        "id": "c",
        "reason": "r",
        "all": True,
        "cursors": {"w": 2},
        "since_time": 5,
    }
