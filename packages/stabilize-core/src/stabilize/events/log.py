"""Reading the event log: the unpacking of its rows, which every dialect's store shares.

A row of the ``events`` table holds the events one transaction recorded for one workflow,
``sequence .. last_sequence`` (see migration 0003): a single event as itself, several as a
JSON list of ``[event_type, entity_type, entity_id, data]``. Readers see one :class:`Event`
per sequence number either way. The queries are each dialect's (``select_events``,
``recent_heads``, ``count_events`` in its ``queries.sql``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from stabilize.models.event import Event

PACKED = "*"
"""The ``event_type`` of a row that holds several events."""


def select_events_params(workflow_id: str, since: int, limit: int | None) -> tuple[Any, ...]:
    """The parameters of each dialect's ``select_events`` (``select_events_limit``) query.

    The query reads the rows of one workflow from the one holding ``since + 1`` on, in
    order: ``(workflow_id, workflow_id, since + 1[, limit])``, two ranges of the primary key.
    """
    params: tuple[Any, ...] = (workflow_id, workflow_id, since + 1)
    return (*params, limit) if limit is not None else params


def unpack(rows: Iterable[Sequence[Any]], since: int, limit: int | None) -> list[Event]:
    """The events with ``sequence > since`` of rows from a ``select_events`` query."""
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
