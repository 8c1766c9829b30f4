"""Reading the event log: the SQL both event stores share and the unpacking of its rows.

A row of the ``events`` table holds the events one transaction recorded for one workflow,
``sequence .. last_sequence`` (see migration 0003): a single event as itself, several as a
JSON list of ``[event_type, entity_type, entity_id, data]``. Readers see one :class:`Event`
per sequence number either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from stabilize.events.model import Event

PACKED = "*"
"""The ``event_type`` of a row that holds several events."""

_COLUMNS = (
    "workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data, last_sequence"
)


def select_events_sql(placeholder: str, *, limit: bool) -> str:
    """Rows of one workflow from the one holding ``since + 1`` on, in order.

    Parameters: ``(workflow_id, workflow_id, since + 1[, limit])``. Both reads are ranges
    of the primary key.
    """
    p = placeholder
    sql = (
        f"SELECT {_COLUMNS} FROM events WHERE workflow_id = {p} AND sequence >= "
        f"COALESCE((SELECT max(sequence) FROM events WHERE workflow_id = {p} "
        f"AND sequence <= {p}), 0) ORDER BY sequence"
    )
    return sql + f" LIMIT {p}" if limit else sql


def select_events_params(workflow_id: str, since: int, limit: int | None) -> tuple[Any, ...]:
    """The parameters of :func:`select_events_sql`."""
    params: tuple[Any, ...] = (workflow_id, workflow_id, since + 1)
    return (*params, limit) if limit is not None else params


COUNT_EVENTS_SQL = (
    "SELECT COALESCE(sum(COALESCE(last_sequence, sequence) - sequence + 1), 0) FROM events"
)
"""The number of events (not rows) in the log."""


def recent_heads_sql(placeholder: str, *, application: bool, rowid_time: bool = False) -> str:
    """Workflows with events at or after a time, and the last sequence of each.

    Parameters: ``(since_ms[, application])``; uses the ``events_by_time`` index (and the
    ``workflows`` table of the same database for the application). With ``rowid_time``
    (SQLite, whose rowids hold the time, see ``0003_events.sql``) the parameters are
    ``(since_ms << 16, since_ms[, application])`` and a range of rowids replaces the index.
    """
    p = placeholder
    sql = "SELECT workflow_id, max(COALESCE(last_sequence, sequence)) FROM events "
    if rowid_time:
        # NOT INDEXED: left to itself SQLite scans the whole (workflow_id, sequence) index
        # for the GROUP BY instead of reading the range of recent rowids.
        sql += f"NOT INDEXED WHERE rowid >= {p} AND "
    else:
        sql += "WHERE "
    sql += f"timestamp >= {p}"
    if application:
        sql += f" AND workflow_id IN (SELECT id FROM workflows WHERE application = {p})"
    return sql + " GROUP BY workflow_id"


def unpack(rows: Iterable[Sequence[Any]], since: int, limit: int | None) -> list[Event]:
    """The events with ``sequence > since`` of rows from :func:`select_events_sql`."""
    out: list[Event] = []
    for workflow_id, first, event_type, entity_type, entity_id, timestamp, data, last in rows:
        if last is None:
            if first > since:
                out.append(
                    Event(
                        workflow_id,
                        first,
                        event_type,
                        entity_type,
                        entity_id,
                        timestamp,
                        json.loads(data),
                    )
                )
        elif last > since:
            for offset, (kind, etype, eid, body) in enumerate(json.loads(data)):
                sequence = first + offset
                if sequence > since:
                    out.append(Event(workflow_id, sequence, kind, etype, eid, timestamp, body))
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out
