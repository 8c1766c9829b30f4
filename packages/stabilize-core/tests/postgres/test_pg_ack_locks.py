"""Acknowledging a message whose transition follows locks its workflow row at once.

The processor follows the acknowledgement of every kind in ``TRANSITION_KINDS`` with a
transition of the message's workflow. PostgreSQL's transaction locks that row in the
acknowledging statement, and ``ack_many`` locks the rows of a batch in the order of their
ids, so two workers acknowledging messages of the same workflows cannot deadlock. A kind
left out of that set had its row locked later, one at a time, in the batch's order
(``SignalTimeout`` was, while the processor settled it inline).
"""

from __future__ import annotations

import psycopg
import pytest

from stabilize import PostgresWorkflowStore
from stabilize.message_kinds import INLINE_KINDS, SIGNAL_TIMEOUT, START_WORKFLOW, TRANSITION_KINDS
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
