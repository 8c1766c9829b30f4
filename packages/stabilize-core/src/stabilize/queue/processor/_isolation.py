"""Committing a step's work piece by piece after its transaction failed for good (#13).

A failure that retrying cannot cure (a value the database refuses, a row it cannot read,
an engine bug on one workflow) must stop only the message that caused it, never the
worker: these functions redo the step one message at a time.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from stabilize import tracing
from stabilize._json import safe_text
from stabilize.errors import InvalidTaskResultError
from stabilize.queue.processor._runner import Finished, InFlight
from stabilize.records import ClaimedMessage

if TYPE_CHECKING:
    from stabilize.queue.processor._processor import QueueProcessor

log = logging.getLogger("stabilize.processor")


def commit_apart(
    processor: QueueProcessor, finished: list[Finished], capacity: int, now: int, error: Exception
) -> tuple[int, list[tuple[InFlight, timedelta | None]]]:
    """Commit a step's work piece by piece after its transaction failed for good.

    A failure that retrying cannot cure (a value the database refuses, a row it cannot
    read, an engine bug on one workflow) must stop only the message that caused it
    (#13). Each finished result gets a transaction of its own; one that fails again
    ends its task TERMINAL with the reason. Then messages are claimed and each is
    settled in its own transaction; one that fails is dead-lettered with the reason.
    Transient errors still propagate (what is not committed is retried).
    """
    log.error(
        "a commit failed (%s: %s); committing its work one message at a time",
        type(error).__name__,
        error,
    )
    done = 0
    for index, item in enumerate(finished):
        try:
            done += processor._commit([item], 0, now)[0]
        except Exception as exc:
            if processor.backend.is_transient_error(exc):
                processor._retry = finished[index:] + processor._retry
                raise
            done += commit_unstorable(processor, item, exc, now)
        processor._inflight.pop(item.flight.msg.id, None)
    dispatch: list[tuple[InFlight, timedelta | None]] = []
    if capacity <= 0:
        return done, dispatch
    with processor.backend.transaction() as tx:
        claimed = tx.claim(
            processor.owner,
            now,
            now + processor.lease_ms,
            min(capacity, processor.config.claim_batch_size),
        )
    processor.commits += 1
    for msg in claimed:
        room = capacity - len(dispatch)
        try:
            settled, more = processor._commit([], room, now, claimed=[msg])
        except Exception as exc:
            if processor.backend.is_transient_error(exc):
                raise  # still leased to us: taken again when the lease runs out
            settled, more = dead_letter_apart(processor, msg, exc, now), []
        done += settled
        dispatch.extend(more)
    return done, dispatch


def commit_unstorable(processor: QueueProcessor, item: Finished, error: Exception, now: int) -> int:
    """End a task TERMINAL whose result could not be committed; return messages acked."""
    flight = item.flight
    where = f"stage {flight.stage.ref_id!r}"
    reason = f"the result of a task of {where} could not be stored: {type(error).__name__}"
    log.error("%s: %s", reason, error)
    # Progress it emitted may be what the database refused: it is dropped with it.
    flight.progress_recorded = len(flight.stage._progress or [])
    replacement = Finished(flight, error=InvalidTaskResultError(f"{reason}: {error}"))
    try:
        return processor._commit([replacement], 0, now)[0]
    except Exception as exc:
        if processor.backend.is_transient_error(exc):
            processor._retry.append(replacement)
            return 0
        # Left leased: it is delivered again when the lease runs out, until the queue's
        # max_attempts dead-letters it.
        log.exception("could not record the failure of message %s either", flight.msg.id)
        return 0


def dead_letter_apart(
    processor: QueueProcessor, msg: ClaimedMessage, error: Exception, now: int
) -> int:
    """Dead-letter a claimed message whose transition cannot be committed."""
    reason = f"could not be processed: {type(error).__name__}: {error}"
    log.error("message %s (%s, workflow %s) %s", msg.id, msg.kind, msg.workflow_id, reason)
    try:
        with processor.backend.transaction() as tx:
            tx.dead_letter(msg, safe_text(reason)[:2000], now)
    except Exception as exc:
        if processor.backend.is_transient_error(exc):
            raise
        log.exception("could not dead-letter message %s", msg.id)
        return 0
    processor.commits += 1
    observer = tracing.observer
    if observer is not None:
        observer.dead_lettered(msg.kind)
    return 1
