"""Rows as the backends write them: messages, rows of the event log, state diffs, checks.

Shared by every dialect's transaction, so the encodings cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stabilize._json import ENCODING_ERRORS, dumps, dumps_known, loads
from stabilize.errors import ContextSerializationError
from stabilize.events.diff import diff
from stabilize.models.workflow import Workflow
from stabilize.records import USER_DATA_EVENTS, ClaimedMessage, Effects, EventDraft, Message


def check_json(value: Any, where: str, *, ref_id: str | None = None) -> None:
    """Raise :class:`ContextSerializationError` naming ``where`` if ``value`` is not JSON."""
    try:
        dumps(value)
    except ENCODING_ERRORS as exc:
        culprit = ""
        if isinstance(value, dict):
            for key, item in value.items():
                try:
                    dumps(item)
                except ENCODING_ERRORS:
                    culprit = f" (key {key!r} holds a {type(item).__name__})"
                    break
        raise ContextSerializationError(
            f"{where} cannot be stored as JSON{culprit}: {exc}", ref_id=ref_id
        ) from None


def check_workflow_json(workflow: Workflow) -> None:
    """Refuse a workflow whose context, trigger or any stage context is not JSON."""
    check_json(workflow.context, "workflow context")
    check_json(workflow.trigger, "workflow trigger")
    for stage in workflow.stages:
        check_json(stage.context, f"context of stage {stage.ref_id!r}", ref_id=stage.ref_id)
        check_json(stage.outputs, f"outputs of stage {stage.ref_id!r}", ref_id=stage.ref_id)


def message_row(
    m: Message,
    now: int,
    lease_owner: str | None,
    lease_until: int | None,
    token: int | None = None,
) -> tuple[Any, ...]:
    """The values of the ``enqueue`` query for ``m``, leased to ``lease_owner`` if given.

    ``token``: the lease token the row starts with (None: 1 when leased, else 0; a row
    that held an earlier message must start above every token it had).
    """
    leased = lease_owner is not None
    return (
        m.workflow_id,
        m.kind,
        m.stage_id,
        m.task_id,
        dumps(m.payload),
        now + max(0, m.delay_ms),
        1 if leased else 0,
        lease_owner,
        (1 if leased else 0) if token is None else token,
        lease_until if leased else None,
        now,
    )


def leased_message(msg_id: int, m: Message, token: int = 1) -> ClaimedMessage:
    """``m`` as the message its producer leased on insert (first attempt, lease ``token``)."""
    return ClaimedMessage(msg_id, m.kind, m.workflow_id, m.stage_id, m.task_id, m.payload, 1, token)


def event_row(
    workflow_id: str, first: int, events: Sequence[EventDraft], now: int
) -> tuple[Any, ...]:
    """The row of the log holding ``events`` (numbered from ``first``) of one transition.

    One event is stored as itself; several as one row spanning ``first .. last_sequence``
    whose data is the list of ``[event_type, entity_type, entity_id, data]`` (one encoding
    per transition instead of one per event; :func:`merge_event_rows` joins the rows of one
    workflow's transitions in one transaction).
    """
    if len(events) == 1:
        (event,) = events
        return (
            workflow_id,
            first,
            event.event_type,
            event.entity_type,
            event.entity_id,
            now,
            event.json(),
            None,
        )
    parts: list[str] = []
    pending: list[list[Any]] = []  # consecutive events to encode in one call
    strict = False  # whether one of them holds data a task handed over (see EventDraft.json)
    for e in events:
        if e.encoded is None:
            pending.append([e.event_type, e.entity_type, e.entity_id, e.data])
            strict = strict or e.event_type in USER_DATA_EVENTS
            continue
        if pending:
            parts.append((dumps if strict else dumps_known)(pending)[1:-1])
            pending, strict = [], False
        parts.append(_log_entry(e.event_type, e.entity_type, e.entity_id, e.encoded))
    if pending:
        parts.append((dumps if strict else dumps_known)(pending)[1:-1])
    body = f"[{','.join(parts)}]"
    last = first + len(events) - 1
    return (workflow_id, first, "*", "workflow", workflow_id, now, body, last)


def _log_entry(event_type: str, entity_type: str, entity_id: str, data: str) -> str:
    """One event in a row of several: ``[event_type, entity_type, entity_id, data]``.

    ``data`` is already encoded JSON.
    """
    head = dumps_known([event_type, entity_type, entity_id])
    return f"{head[:-1]},{data}]"


def merge_event_rows(rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """One row of the log holding the events of ``rows``.

    ``rows`` (from :func:`event_row`) are of one workflow and their sequences follow each
    other; the merged row carries the first one's time.
    """
    if len(rows) == 1:
        return rows[0]
    items = []
    for row in rows:
        event_type, entity_type, entity_id, data, last = row[2], row[3], row[4], row[6], row[7]
        if last is None:  # a single event: its data only
            items.append(_log_entry(event_type, entity_type, entity_id, data))
        else:  # already a list of events
            items.append(data[1:-1])
    workflow_id, first, timestamp = rows[0][0], rows[0][1], rows[0][5]
    tail = rows[-1]
    last_sequence = tail[7] if tail[7] is not None else tail[1]
    body = f"[{','.join(items)}]"
    return (workflow_id, first, "*", "workflow", workflow_id, timestamp, body, last_sequence)


def state_change(
    wf: Workflow,
    wf_row: dict[str, Any] | None,
    wf_body: str | None,
    rows: dict[str, dict[str, Any]],
    bodies: dict[str, str],
    added: dict[str, str],
    fx: Effects,
    *,
    diffs: bool,
) -> dict[str, Any]:
    """What a transition changed, as diffs of the rows: the event that makes replay exact.

    Only the changed keys are stored (never whole copies of a context), so the log grows
    with the size of the changes. Each model keeps the JSON of its row as last written
    (``_written``: the models are changed in place) and each diff is taken from that
    text, parsed, to the row as it is now. The text holds no objects for the garbage
    collector to walk, and a diff taken from what was stored replays to what is stored:
    where JSON changed a key (``1`` became ``"1"``) the diff both removes and sets it,
    and :func:`stabilize.events.diff.apply` removes first. When events are not recorded
    no baseline is kept, and the first diff after recording starts holds the whole row.
    """
    change: dict[str, Any] = {}
    if wf_row is not None:
        if diffs and (wf_diff := diff(_parsed(wf._written), wf_row)):
            change["workflow"] = wf_diff
        wf._written = wf_body if diffs else None
    stage_diffs: dict[str, Any] = {}
    for stage_id, row in rows.items():
        stage = fx.stages[stage_id]
        if diffs and (stage_diff := diff(_parsed(stage._written), row)):
            stage_diffs[stage_id] = stage_diff
        stage._written = bodies[stage_id] if diffs else None
    if stage_diffs:
        change["stages"] = stage_diffs
    for stage in fx.new_stages:
        stage._written = added[stage.id] if diffs else None
    if diffs and added:
        change["added"] = [loads(added[stage.id]) for stage in fx.new_stages]
    return change


def _parsed(written: str | None) -> dict[str, Any]:
    """A baseline row: the JSON last written, parsed (empty when there is none)."""
    return loads(written) if written is not None else {}
