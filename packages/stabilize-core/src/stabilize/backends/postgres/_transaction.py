"""The PostgreSQL transaction: the shared :class:`Transaction` in fewer statements."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any, Literal

from stabilize._json import loads
from stabilize.backends._base import Backend, Cursor, Transaction
from stabilize.backends._rows import leased_message, message_row
from stabilize.backends.postgres._connection import event_channel
from stabilize.backends.postgres._cursor import _PipelinedCursor, write_statement
from stabilize.message_kinds import TRANSITION_KINDS
from stabilize.models.stage import StageExecution
from stabilize.models.workflow import Workflow
from stabilize.records import ClaimedMessage, Message

_NOT_READ = object()


class PostgresTransaction(Transaction):
    """A :class:`Transaction` that spends fewer statements and round trips per transition.

    Same reads and writes as the shared implementation, in fewer statements:

    - a claim selects and leases in one statement (taking this process's wake-up
      reservations too), and locks the workflows of the messages it takes and reads their
      versions in it, leaving a message whose workflow another transaction holds;
    - acknowledging a message that a transition of its workflow follows (the kinds of
      :data:`~stabilize.message_kinds.TRANSITION_KINDS`) also locks the workflow row and
      reads its version in the same statement; :meth:`workflow` then uses that version
      instead of locking the row again;
    - :meth:`ack_many` acknowledges the messages of a step and locks their workflows in one
      statement;
    - the writes of every transition (stage and workflow rows, new messages, rows of the
      event log) are gathered by the cursor and sent as one statement before the next
      statement that is not a write, and at commit (see :class:`_PipelinedCursor`); new
      messages get their ids from a block the backend reserved, so a message leased to
      the caller on insert needs no answer from the server either;
    - lease renewals are one statement.
    """

    def __init__(
        self,
        backend: Backend,
        cur: Cursor,
        queries: dict[str, str],
        *,
        read_only: bool = False,
        event_table: str | Literal[False] | None = False,
    ) -> None:
        super().__init__(backend, cur, queries, read_only=read_only, event_table=event_table)
        self._versions: dict[str, Any] = {}
        """Versions read (and rows locked) by :meth:`ack` and :meth:`claim`, for the next
        :meth:`workflow`."""

    # -- events ------------------------------------------------------------------------

    def _insert_event_rows(self, event_table: str, rows: list[tuple[Any, ...]]) -> None:
        """Gather the rows of the log with the transaction's other writes."""
        self._pipelined().defer_events(rows)

    def write_statement(self) -> str:
        """The statement that sends this transaction's gathered writes."""
        event_table = self.event_table or ""
        # event_table is "" (this schema) or '"<schema>".' (see PostgresEventStore).
        here: str | None = getattr(self.backend, "current_schema", None)
        schema = event_table[1:-2] if event_table else here
        queue_channel: str = getattr(self.backend, "channel", "")
        return write_statement(queue_channel, event_table, event_channel(schema))

    def _pipelined(self) -> _PipelinedCursor:
        if not isinstance(self.cur, _PipelinedCursor):  # pragma: no cover - a misuse
            raise TypeError("writes need the pipelined cursor of a write transaction")
        return self.cur

    # -- workflows ---------------------------------------------------------------------

    def workflow(self, workflow_id: str) -> Workflow | None:
        """Load a workflow for a transition; see :meth:`Transaction.workflow`."""
        version = self._versions.pop(workflow_id, _NOT_READ)
        if version is _NOT_READ or workflow_id in self.touched or self.read_only:
            return super().workflow(workflow_id)
        if version is None:
            return None
        cached = self.backend.cache.get(workflow_id)
        if cached is None or cached.version != version:
            cached = self.read_workflow(workflow_id)
            if cached is None:  # pragma: no cover - deleted between two reads of one txn
                return None
        self.touched[workflow_id] = cached
        return cached

    def read_stages(self, stage_ids: Collection[str]) -> dict[str, StageExecution]:
        """Fresh copies of the stages ``stage_ids`` that exist, by id, in one statement."""
        if not stage_ids:
            return {}
        self.cur.execute(self.q["load_stages_by_id"], (list(stage_ids),))
        return {row[0]: StageExecution.from_dict(loads(row[1])) for row in self.cur.fetchall()}

    # -- queue -------------------------------------------------------------------------

    def enqueue(
        self,
        messages: Sequence[Message],
        now: int,
        *,
        lease_owner: str | None = None,
        lease_until: int | None = None,
        lease_limit: int = 0,
    ) -> list[ClaimedMessage]:
        """Insert messages; up to ``lease_limit`` due ones are inserted leased to the owner."""
        if not messages:
            return []
        ids = self._message_ids(len(messages))
        rows: list[tuple[Any, ...]] = []
        claimed: list[ClaimedMessage] = []
        for msg_id, m in zip(ids, messages, strict=True):
            lease = lease_owner is not None and m.delay_ms <= 0 and len(claimed) < lease_limit
            owner = lease_owner if lease else None
            rows.append((msg_id, *message_row(m, now, owner, lease_until)))
            if lease:
                claimed.append(leased_message(msg_id, m))
            elif m.delay_ms <= 0:
                self.claimable += 1
        self._pipelined().defer_messages(rows)
        return claimed

    def _message_ids(self, count: int) -> list[int]:
        """``count`` unused ids of the queue's sequence (reserved by the backend in blocks)."""
        take = getattr(self.backend, "take_message_ids", None)
        if take is None:  # pragma: no cover - a PostgresTransaction outside PostgresBackend
            raise TypeError("message ids come from a PostgresBackend")
        ids: list[int] = take(count, self._reserve_message_ids)
        return ids

    def _reserve_message_ids(self, count: int) -> list[int]:
        self.cur.execute(self.q["reserve_message_ids"], (count,))
        return [int(r[0]) for r in self.cur.fetchall()]

    def claim(self, owner: str, now: int, lease_until: int, limit: int) -> list[ClaimedMessage]:
        """Lease up to ``limit`` due messages whose lease is free or expired (one statement).

        Messages that an idle waiter of this process reserved count as unleased (see
        :meth:`PostgresBackend.wait_for_work`). The workflows of the messages taken are
        locked too; a message whose workflow another transaction holds is left for a
        later claim instead of waited for (see the ``claim`` query): waiting there could
        close a deadlock with a transaction that waits for a workflow this one locked
        when it acknowledged its results. The versions read with the locks spare the
        transitions that follow a read each (see :meth:`workflow`).
        """
        if limit <= 0:
            return []
        reserver: str | None = getattr(self.backend, "wake_owner", None)
        self.cur.execute(self.q["claim"], (now, now, reserver, limit, reserver, owner, lease_until))
        rows = sorted(self.cur.fetchall(), key=lambda r: (r[8], r[0]))
        for row in rows:  # locked: the transitions that follow need not read it again
            self._versions[row[1]] = row[9]
        return [ClaimedMessage(r[0], r[2], r[1], r[3], r[4], loads(r[5]), r[6], r[7]) for r in rows]

    def ack(self, msg: ClaimedMessage, owner: str) -> bool:
        """Delete a claimed message if this owner still holds its lease (the fence)."""
        if msg.kind in TRANSITION_KINDS and msg.workflow_id not in self.touched:
            self.cur.execute(self.q["ack_and_lock"], (msg.id, msg.lease_token, owner))
            row = self.cur.fetchone()
            if row is None:
                return False
            self._versions[msg.workflow_id] = row[0]
            return True
        self.cur.execute(self.q["ack"], (msg.id, msg.lease_token, owner))
        return self.cur.fetchone() is not None

    def ack_many(self, msgs: Sequence[ClaimedMessage], owner: str) -> set[int]:
        """Acknowledge messages and lock their workflows in one statement (see :meth:`ack`).

        The workflow rows are locked in the order of their ids, so two workers that
        acknowledge messages of the same workflows cannot deadlock on them.
        """
        locking = [
            m for m in msgs if m.kind in TRANSITION_KINDS and m.workflow_id not in self.touched
        ]
        if len(locking) < 2:
            return super().ack_many(msgs, owner)
        self.cur.execute(
            self.q["ack_many_and_lock"],
            ([m.id for m in locking], [m.lease_token for m in locking], owner),
        )
        acked: set[int] = set()
        for msg_id, workflow_id, version in self.cur.fetchall():
            acked.add(int(msg_id))
            self._versions[workflow_id] = version
        batched = {m.id for m in locking}
        others = [m for m in msgs if m.id not in batched]
        return acked | super().ack_many(others, owner)

    def extend_leases(
        self, owner: str, leases: Iterable[tuple[int, int]], lease_until: int
    ) -> list[int]:
        """Extend the leases ``(id, token)`` this owner holds; return ids no longer held."""
        wanted = list(leases)
        if not wanted:
            return []
        self.cur.execute(
            self.q["extend_leases"],
            (lease_until, [i for i, _ in wanted], [t for _, t in wanted], owner),
        )
        held = {int(r[0]) for r in self.cur.fetchall()}
        return [msg_id for msg_id, _ in wanted if msg_id not in held]
