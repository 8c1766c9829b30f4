"""The work of one transaction of the processor, and what its messages carry."""

from __future__ import annotations

from datetime import timedelta

from stabilize import tracing
from stabilize.backends._base import Transaction
from stabilize.message_kinds import RUN_TASK
from stabilize.models.workflow import Workflow
from stabilize.queue.processor._runner import InFlight
from stabilize.records import ClaimedMessage, Effects, EventDraft, Message


class Batch:
    """The work of one transaction: what it settles here and what it hands to user code.

    New RunTask messages are inserted already leased to this worker while it has room:
    ``capacity`` less what is dispatched and what is still waiting in ``pending``.
    """

    def __init__(self, tx: Transaction, owner: str, lease_ms: int, capacity: int, now: int) -> None:
        self.tx = tx
        self.owner = owner
        self.lease_ms = lease_ms
        self.capacity = capacity
        self.now = now
        self.pending: list[ClaimedMessage] = []
        self.next = 0
        self.dispatch: list[tuple[InFlight, timedelta | None]] = []
        self.done = 0
        self.ends: list[tuple[Workflow, EventDraft]] | None = None
        """Stage and workflow ends saved, kept only while tracing is on."""

    def room(self) -> int:
        waiting = sum(1 for m in self.pending[self.next :] if m.kind == RUN_TASK)
        return self.capacity - len(self.dispatch) - waiting

    def enqueue(self, messages: list[Message]) -> None:
        self.pending.extend(
            self.tx.enqueue(
                messages,
                self.now,
                lease_owner=self.owner,
                lease_until=self.now + self.lease_ms,
                lease_limit=max(0, self.room()),
            )
        )

    def save(self, wf: Workflow, fx: Effects) -> None:
        self.tx.save(wf, fx, self.now)
        if self.ends is not None:
            self.ends.extend((wf, event) for event in tracing.ends_of(fx.events))
        if fx.messages:
            self.enqueue(fx.messages)


def message_run(msg: ClaimedMessage) -> int | None:
    """The run of its task a RunTask (or timer) message was sent for (None: any run)."""
    run = msg.payload.get("run")
    return run if isinstance(run, int) else None
