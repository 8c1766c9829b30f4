"""Acknowledging a message whose transition follows locks its workflow row at once.

The processor follows the acknowledgement of every kind in ``TRANSITION_KINDS`` with a
transition of the message's workflow. PostgreSQL's transaction locks that row in the
acknowledging statement, and ``ack_many`` locks the rows of a batch in the order of their
ids, so two workers acknowledging messages of the same workflows cannot deadlock. A kind
left out of that set had its row locked later, one at a time, in the batch's order
(``SignalTimeout`` was, while the processor settled it inline).

A claim locks the workflows of the messages it takes as well, and leaves a message whose
workflow another transaction holds for later rather than wait: a worker that had
acknowledged results (holding their workflows) and then waited for a claimed message's
workflow closed deadlocks with a worker acknowledging in the other order (PostgreSQL
broke them after its ``deadlock_timeout``, a second lost by both).
"""

from __future__ import annotations

import psycopg
import pytest

from stabilize import PostgresWorkflowStore
from stabilize.backends.postgres import PostgresBackend
from stabilize.message_kinds import (
    INLINE_KINDS,
    RUN_TASK,
    SIGNAL_TIMEOUT,
    START_WORKFLOW,
    TRANSITION_KINDS,
)
from stabilize.records import ClaimedMessage, Message

pytestmark = pytest.mark.postgres

OWNER = "worker-1"


def row_is_locked(pg_url: str, schema: str, workflow_id: str) -> bool:
    """Whether another transaction holds the workflow's row (asked without waiting)."""
    with psycopg.connect(pg_url, options=f"-csearch_path={schema}") as conn:
        try:
            conn.execute("SELECT id FROM workflows WHERE id = %s FOR UPDATE NOWAIT", (workflow_id,))
        except psycopg.errors.LockNotAvailable:
            return True
        return False


def leased(store: PostgresWorkflowStore, messages: list[Message]) -> list[ClaimedMessage]:
    with store.backend.transaction() as tx:
        return tx.enqueue(
            messages, 1_000, lease_owner=OWNER, lease_until=10**15, lease_limit=len(messages)
        )


def test_every_inline_kind_is_a_transition_kind() -> None:
    assert INLINE_KINDS <= TRANSITION_KINDS


@pytest.mark.parametrize("kind", sorted(TRANSITION_KINDS))
def test_acknowledging_locks_the_workflow_row(pg_url, pg_schema, build, kind):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    wf = build.workflow(build.stage("a", "noop"))
    store.store(wf)
    (msg,) = leased(store, [Message(kind, wf.id, wf.stages[0].id)])

    with store.backend.transaction() as tx:
        assert tx.ack(msg, OWNER)
        assert row_is_locked(pg_url, pg_schema, wf.id)
        assert tx.workflow(wf.id) is not None


def test_a_batch_with_a_signal_timeout_locks_every_workflow_in_one_statement(
    pg_url, pg_schema, build
):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    first = build.workflow(build.stage("a", "noop"))
    second = build.workflow(build.stage("a", "noop"))
    store.store(first)
    store.store(second)
    claimed = leased(
        store,
        [
            Message(SIGNAL_TIMEOUT, first.id, first.stages[0].id),
            Message(START_WORKFLOW, second.id),
        ],
    )

    with store.backend.transaction() as tx:
        assert tx.ack_many(claimed, OWNER) == {m.id for m in claimed}
        # Both rows are held before any transition asks for its workflow.
        assert row_is_locked(pg_url, pg_schema, first.id)
        assert row_is_locked(pg_url, pg_schema, second.id)


def queued(store: PostgresWorkflowStore, messages: list[Message]) -> None:
    with store.backend.transaction() as tx:
        tx.enqueue(messages, 1_000)


def lease_of(pg_url: str, schema: str, message_id: int) -> tuple[str | None, int | None]:
    with psycopg.connect(pg_url, options=f"-csearch_path={schema}") as conn:
        row = conn.execute(
            "SELECT lease_owner, lease_until FROM queue_messages WHERE id = %s", (message_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_claim_locks_the_workflows_of_what_it_takes(pg_url, pg_schema, build, monkeypatch):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    wf = build.workflow(build.stage("a", "noop"))
    store.store(wf)
    queued(store, [Message(START_WORKFLOW, wf.id)])

    with store.backend.transaction() as tx:
        (msg,) = tx.claim(OWNER, 2_000, 10**15, 10)
        assert msg.workflow_id == wf.id
        assert row_is_locked(pg_url, pg_schema, wf.id)
        sent: list[str] = []
        execute = tx.cur.execute

        def spy(sql: str, params: tuple[object, ...] = ()) -> object:
            sent.append(sql)
            return execute(sql, params)

        monkeypatch.setattr(tx.cur, "execute", spy)
        loaded = tx.workflow(wf.id)
        # The claim read the version with the lock: the transition reads nothing more.
        assert loaded is not None
        assert loaded.version == wf.version
        assert sent == []


def test_a_claim_leaves_a_message_whose_workflow_another_transaction_holds(
    pg_url, pg_schema, build
):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    busy = build.workflow(build.stage("a", "noop"))
    idle = build.workflow(build.stage("a", "noop"))
    store.store(busy)
    store.store(idle)
    queued(
        store,
        [
            Message(RUN_TASK, busy.id, busy.stages[0].id, busy.stages[0].tasks[0].id),
            Message(START_WORKFLOW, idle.id),
        ],
    )
    other = PostgresBackend(pg_url, schema=pg_schema)  # another worker process
    try:
        with other.transaction() as holder:
            assert holder.workflow(busy.id) is not None  # holds the row until it commits
            with store.backend.transaction() as tx:
                taken = tx.claim(OWNER, 2_000, 10**15, 10)
            assert [m.workflow_id for m in taken] == [idle.id]
        with store.backend.transaction() as tx:
            (later,) = tx.claim(OWNER, 2_000, 10**15, 10)
        assert later.workflow_id == busy.id
        assert later.attempts == 1  # the claim that left it did not count as a delivery
    finally:
        other.close()


def test_a_reservation_on_a_message_left_by_a_claim_is_given_back(pg_url, pg_schema, build):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    backend = store.backend
    assert isinstance(backend, PostgresBackend)
    wf = build.workflow(build.stage("a", "noop"))
    store.store(wf)
    (msg,) = leased(store, [Message(START_WORKFLOW, wf.id)])
    with backend.transaction() as tx:  # as an idle waiter of this process reserves it
        tx.cur.execute(
            "UPDATE queue_messages SET lease_owner = %s, lease_until = %s WHERE id = %s",
            (backend.wake_owner, 10**15, msg.id),
        )
    other = PostgresBackend(pg_url, schema=pg_schema)
    try:
        with other.transaction() as holder:
            assert holder.workflow(wf.id) is not None
            with backend.transaction() as tx:
                assert tx.claim(OWNER, 2_000, 10**15, 10) == []
        # Free for any worker at once, not when the reservation would have ended.
        assert lease_of(pg_url, pg_schema, msg.id) == (None, None)
    finally:
        other.close()


def test_a_claim_takes_a_message_whose_workflow_is_gone(pg_url, pg_schema, build):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    wf = build.workflow(build.stage("a", "noop"))
    store.store(wf)
    queued(store, [Message(START_WORKFLOW, wf.id)])
    with store.backend.transaction() as tx:
        tx.cur.execute("DELETE FROM stages WHERE workflow_id = %s", (wf.id,))
        tx.cur.execute("DELETE FROM workflows WHERE id = %s", (wf.id,))

    with store.backend.transaction() as tx:
        (msg,) = tx.claim(OWNER, 2_000, 10**15, 10)
        assert tx.workflow(msg.workflow_id) is None  # the processor deletes it then
