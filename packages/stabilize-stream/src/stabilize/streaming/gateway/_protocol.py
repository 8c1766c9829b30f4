"""The gateway's JSON protocol: client frames (parsed and validated) and server frames.

Every frame is one JSON object in one WebSocket text frame, with a ``type`` field. This
module does no I/O: :func:`parse_frame` turns a client's text into a :class:`Subscribe`,
:class:`Unsubscribe` or :class:`Ping`, or raises :class:`ProtocolError` naming what is
wrong and where; the ``*_frame`` functions build the server's frames. ``docs/gateway.md``
is the reference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote

from stabilize.models.event import Event

PROTOCOL_VERSION = 1
"""Bumped on an incompatible change of the frames below."""

MAX_ID_LENGTH = 128
"""Longest subscription id a client may choose."""

MAX_NAME_LENGTH = 256
"""Longest workflow id or application name accepted in a subscription."""

MAX_SEQUENCE = 2**63 - 1
"""Largest ``since`` or cursor: sequences are signed 64-bit integers in the log."""

MAX_TIME_MS = 32_503_680_000_000
"""Latest ``since_time`` (epoch ms of 3000-01-01): later times cannot be compared with the
log's (a SQLite log keeps an event's time times 65,536 in a signed 64-bit rowid)."""

MAX_EVENT_BYTES = 1024 * 1024 - 64 * 1024
"""Default longest event frame (960 KiB): under the 1 MiB WebSocket clients accept by default."""

ENVELOPE_BYTES = 2048
"""Room kept in an event frame for its ``type`` and subscription ``id`` (128 characters,
escaped)."""

MIN_EVENT_BYTES = 2 * ENVELOPE_BYTES
"""Smallest ``max_event_bytes`` a gateway accepts."""

MAX_TRUNCATED_FIELDS = 64
"""An event's ``data`` with more keys than this is left out whole when too long."""


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` frame (stable: clients may branch on it)."""

    BAD_FRAME = "bad_frame"
    """Not JSON, not an object, a binary frame, or a field missing, unknown or invalid."""
    UNKNOWN_TYPE = "unknown_type"
    """The ``type`` is not one the server knows."""
    UNKNOWN_WORKFLOW = "unknown_workflow"
    """No event of that workflow is in the log."""
    UNKNOWN_SUBSCRIPTION = "unknown_subscription"
    """``unsubscribe`` names no active subscription of this connection."""
    SUBSCRIPTION_EXISTS = "subscription_exists"
    """``subscribe`` reuses the id of an active subscription of this connection."""
    TOO_LARGE = "too_large"
    """The frame is longer than the server's message limit."""
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    """The connection already has the most subscriptions the server allows."""
    UNAUTHORIZED = "unauthorized"
    """Missing or wrong token (sent as the body of the HTTP 401 of the handshake)."""
    UNAVAILABLE = "unavailable"
    """The event log could not be read; retry later."""


class ProtocolError(Exception):
    """A client frame the server refuses; becomes an ``error`` frame.

    Attributes:
        code: The error code.
        message: What is wrong, and where.
        field: The offending field (dotted for nested ones), if one is to blame.
        sub_id: The subscription id of the frame, when it had a valid one.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        sub_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.sub_id = sub_id


@dataclass(frozen=True)
class Subscribe:
    """A ``subscribe`` frame.

    Exactly one of ``workflow_id``, ``application`` and ``all_workflows`` is set.

    Attributes:
        id: The client's name for the subscription (echoed in every frame about it).
        workflow_id: Follow this workflow.
        application: Follow every workflow of this application.
        all_workflows: Follow every workflow (``"all": true``).
        since: Workflow subscriptions: deliver events with a sequence above this.
        cursors: Application/all subscriptions: the last sequence the client has per
            workflow; those workflows resume after it.
        since_time: Application/all subscriptions: epoch ms; workflows with events from
            then on are delivered (from their start unless in ``cursors``). None: now.
    """

    id: str
    workflow_id: str | None = None
    application: str | None = None
    all_workflows: bool = False
    since: int = 0
    cursors: dict[str, int] = field(default_factory=dict)
    since_time: int | None = None

    @property
    def kind(self) -> Literal["workflow", "application", "all"]:
        """Which of the three subscriptions this is."""
        if self.workflow_id is not None:
            return "workflow"
        return "application" if self.application is not None else "all"


@dataclass(frozen=True)
class Unsubscribe:
    """An ``unsubscribe`` frame: stop the subscription ``id``."""

    id: str


@dataclass(frozen=True)
class Ping:
    """A ``ping`` frame; the server answers ``pong`` echoing ``data``."""

    data: Any = None


ClientFrame = Subscribe | Unsubscribe | Ping

_FIELDS: dict[str, frozenset[str]] = {
    "subscribe": frozenset(
        {"type", "id", "workflow_id", "application", "all", "since", "cursors", "since_time"}
    ),
    "unsubscribe": frozenset({"type", "id"}),
    "ping": frozenset({"type", "data"}),
}


def parse_frame(text: str) -> ClientFrame:
    """Parse and validate one client frame.

    Args:
        text: The frame's text.

    Returns:
        The frame.

    Raises:
        ProtocolError: The frame is refused; its message says what is wrong and where.
    """
    try:
        obj = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"frame must be a JSON object, not {_json_kind(obj)}"
        )
    frame_type = obj.get("type")
    if frame_type is None:
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame has no 'type' field", field="type")
    if not isinstance(frame_type, str):
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"'type' must be a string, not {_json_kind(frame_type)}",
            field="type",
        )
    allowed = _FIELDS.get(frame_type)
    if allowed is None:
        known = ", ".join(sorted(_FIELDS))
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown frame type {_short(frame_type)}; expected one of: {known}",
            field="type",
        )
    sub_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"unknown field {_short(unknown[0])} in a {frame_type} frame",
            field=unknown[0],
            sub_id=sub_id,
        )
    if frame_type == "ping":
        return Ping(obj.get("data"))
    sub_id = _subscription_id(obj, frame_type)
    if frame_type == "unsubscribe":
        return Unsubscribe(sub_id)
    return _subscribe(obj, sub_id)


def _subscription_id(obj: dict[str, Any], frame_type: str) -> str:
    if "id" not in obj:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"a {frame_type} frame needs an 'id' (string)", field="id"
        )
    value = obj["id"]
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"'id' must be a string of 1 to {MAX_ID_LENGTH} characters",
            field="id",
        )
    return value


def _subscribe(obj: dict[str, Any], sub_id: str) -> Subscribe:
    targets = [name for name in ("workflow_id", "application", "all") if name in obj]
    if len(targets) != 1:
        given = f" (got {', '.join(targets)})" if targets else ""
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"subscribe needs exactly one of 'workflow_id', 'application', 'all'{given}",
            field=targets[1] if len(targets) > 1 else "workflow_id",
            sub_id=sub_id,
        )
    target = targets[0]
    if target == "all":
        if obj["all"] is not True:
            raise ProtocolError(
                ErrorCode.BAD_FRAME, "'all' must be true", field="all", sub_id=sub_id
            )
    else:
        _name(obj, target, sub_id)
    if target == "workflow_id":
        for name in ("cursors", "since_time"):
            if name in obj:
                raise ProtocolError(
                    ErrorCode.BAD_FRAME,
                    f"'{name}' applies to application and all subscriptions; "
                    "a workflow subscription resumes with 'since'",
                    field=name,
                    sub_id=sub_id,
                )
        since = _count(obj, "since", sub_id, MAX_SEQUENCE) if "since" in obj else 0
        return Subscribe(sub_id, workflow_id=obj["workflow_id"], since=since)
    if "since" in obj:
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            "'since' applies to workflow subscriptions; application and all subscriptions "
            "resume with 'cursors' and 'since_time'",
            field="since",
            sub_id=sub_id,
        )
    since_time = _count(obj, "since_time", sub_id, MAX_TIME_MS) if "since_time" in obj else None
    cursors = _cursors(obj, sub_id) if "cursors" in obj else {}
    return Subscribe(
        sub_id,
        application=obj.get("application"),
        all_workflows=target == "all",
        cursors=cursors,
        since_time=since_time,
    )


def _is_name(value: Any) -> bool:
    """A workflow id or application name the log can hold and be queried with."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LENGTH or "\x00" in value:
        return False
    try:
        value.encode()  # lone surrogates (JSON "\ud800") are no UTF-8 text
    except UnicodeEncodeError:
        return False
    return True


def _name(obj: dict[str, Any], name: str, sub_id: str) -> str:
    value = obj[name]
    if not _is_name(value):
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"'{name}' must be a string of 1 to {MAX_NAME_LENGTH} characters (UTF-8 text, no NUL)",
            field=name,
            sub_id=sub_id,
        )
    return str(value)


def _is_count(value: Any, most: int) -> bool:
    # bool is an int in Python, not in JSON: true is not a sequence number.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most


def _count(obj: dict[str, Any], name: str, sub_id: str, most: int) -> int:
    value = obj[name]
    if not _is_count(value, most):
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"'{name}' must be an integer from 0 to {most}, not {_short(value)}",
            field=name,
            sub_id=sub_id,
        )
    return int(value)


def _cursors(obj: dict[str, Any], sub_id: str) -> dict[str, int]:
    value = obj["cursors"]
    if not isinstance(value, dict):
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"'cursors' must be an object {{workflow_id: sequence}}, not {_json_kind(value)}",
            field="cursors",
            sub_id=sub_id,
        )
    for workflow_id, sequence in value.items():
        if not _is_name(workflow_id):
            raise ProtocolError(
                ErrorCode.BAD_FRAME,
                f"the workflow ids in 'cursors' must be strings of 1 to {MAX_NAME_LENGTH} "
                f"characters (UTF-8 text, no NUL), not {_short(workflow_id)}",
                field="cursors",
                sub_id=sub_id,
            )
        if not _is_count(sequence, MAX_SEQUENCE):
            raise ProtocolError(
                ErrorCode.BAD_FRAME,
                f"cursors[{_short(workflow_id)}] must be an integer from 0 to {MAX_SEQUENCE}, "
                f"not {_short(sequence)}",
                field=f"cursors.{workflow_id}",
                sub_id=sub_id,
            )
    return dict(value)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        # Spelling out a huge integer is slow (and refused past 4300 digits).
        return f"an integer of {value.bit_length()} bits"
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- server frames ---------------------------------------------------------------------


def dumps(obj: dict[str, Any]) -> str:
    """Compact JSON of a server frame."""
    return json.dumps(obj, separators=(",", ":"), default=str)


def _event_fields(event: Event) -> dict[str, Any]:
    return {
        "workflow_id": event.workflow_id,
        "sequence": event.sequence,
        "event_type": event.event_type,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "timestamp": event.timestamp,
    }


def event_url(event: Event) -> str:
    """Where the gateway serves ``event`` in full, relative to its HTTP base."""
    return f"/workflows/{quote(event.workflow_id, safe='')}/events/{event.sequence}"


def event_json(event: Event) -> bytes:
    """An event in full, as ``GET /workflows/<id>/events/<sequence>`` answers it."""
    return dumps({**_event_fields(event), "data": event.data}).encode()


def event_body(event: Event, max_bytes: int = MAX_EVENT_BYTES) -> bytes:
    """The UTF-8 JSON of an event frame after its ``"id"`` field, shared by every subscriber.

    A batch of events is serialized once; each subscription's frame is then
    ``event_frame(sub_id_json, body)``: one concatenation per client.

    A frame longer than ``max_bytes`` gets the biggest values of ``data`` replaced by
    ``null`` until it fits (all of ``data`` if that is not enough), and a ``truncated``
    field: ``{"fields": [the keys replaced, or null for all of data], "bytes": <length of
    the whole event>, "url": <where the gateway serves it in full>}``.
    """
    body = event_json(event)
    limit = max_bytes - ENVELOPE_BYTES
    if len(body) > limit:
        body = _truncated_body(event, len(body), limit)
    return body[1:]  # without the opening brace


def _truncated_body(event: Event, size: int, limit: int) -> bytes:
    fields = _event_fields(event)
    data = event.data
    if isinstance(data, dict) and len(data) <= MAX_TRUNCATED_FIELDS:
        kept = dict(data)
        dropped: list[str] = []
        excess = size - limit + 512 + sum(len(str(k)) for k in data)  # room for the marker
        by_size = sorted(data, key=lambda k: len(dumps({"v": data[k]})), reverse=True)
        for key in by_size:
            if excess <= 0:
                break
            excess -= len(dumps({"v": data[key]})) - len('{"v":null}')
            kept[key] = None
            dropped.append(str(key))
        marker = {"fields": dropped, "bytes": size, "url": event_url(event)}
        body = dumps({**fields, "data": kept, "truncated": marker}).encode()
        if len(body) <= limit:
            return body
    marker = {"fields": None, "bytes": size, "url": event_url(event)}
    return dumps({**fields, "data": None, "truncated": marker}).encode()


def event_frame(sub_id_json: bytes, body: bytes) -> bytes:
    """An ``event`` frame (``sub_id_json``: ``json.dumps(sub_id)``; body: :func:`event_body`)."""
    return b'{"type":"event","id":' + sub_id_json + b"," + body


def subscribed_frame(sub: Subscribe, since_time: int | None = None) -> str:
    """The acknowledgement of a subscription, with its effective starting point.

    Args:
        sub: The subscription.
        since_time: Application/all: the epoch ms the server looks back to (the client's
            ``since_time`` minus the server's clock slack).
    """
    frame: dict[str, Any] = {"type": "subscribed", "id": sub.id}
    if sub.workflow_id is not None:
        frame["workflow_id"] = sub.workflow_id
        frame["since"] = sub.since
    else:
        if sub.application is not None:
            frame["application"] = sub.application
        else:
            frame["all"] = True
        frame["since_time"] = since_time
    return dumps(frame)


def unsubscribed_frame(sub_id: str) -> str:
    """The acknowledgement of an ``unsubscribe``: no event of it follows."""
    return dumps({"type": "unsubscribed", "id": sub_id})


def error_frame(error: ProtocolError) -> str:
    """An ``error`` frame."""
    frame: dict[str, Any] = {"type": "error", "code": error.code.value, "message": error.message}
    if error.sub_id is not None:
        frame["id"] = error.sub_id
    if error.field is not None:
        frame["field"] = error.field
    return dumps(frame)


def pong_frame(data: Any, now_ms: int) -> str:
    """The answer to a ``ping``."""
    return dumps({"type": "pong", "data": data, "time": now_ms})


def heartbeat_frame(now_ms: int) -> str:
    """The periodic ``heartbeat`` (server time in epoch ms)."""
    return dumps({"type": "heartbeat", "time": now_ms})


def resync_frame(
    sub: Subscribe,
    *,
    reason: str,
    since: int | None = None,
    cursors: dict[str, int] | None = None,
    since_time: int | None = None,
) -> str:
    """The subscription was stopped; resubscribe from the positions given.

    Args:
        sub: The stopped subscription.
        reason: Why (for people).
        since: Workflow subscriptions: the last sequence sent.
        cursors: Application/all: the last sequence sent, per workflow.
        since_time: Application/all: the ``since_time`` to resubscribe with.
    """
    frame: dict[str, Any] = {"type": "resync", "id": sub.id, "reason": reason}
    if sub.workflow_id is not None:
        frame["workflow_id"] = sub.workflow_id
        frame["since"] = since
    else:
        if sub.application is not None:
            frame["application"] = sub.application
        else:
            frame["all"] = True
        frame["cursors"] = cursors or {}
        frame["since_time"] = since_time
    return dumps(frame)
