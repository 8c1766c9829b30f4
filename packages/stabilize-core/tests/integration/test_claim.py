"""Transaction.claim: due messages, oldest first, leased with a new token, up to a limit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stabilize.records import Message

if TYPE_CHECKING:
    from integration.conftest import MakeEngine

OWNER = "host:1:claimer"
NOW = 1_000_000


def test_claim_takes_due_unleased_messages_oldest_first_up_to_the_limit(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    with engine.backend.transaction() as tx:
        # The one enqueued first is due last: the claim orders by (deliver_at, id).
        for task, at, delay in [
            ("late", NOW - 30, 20),  # due at NOW - 10, enqueued first
            ("first", NOW - 20, 0),
            ("future", NOW, 500),
            ("second", NOW - 20, 0),
            ("leased", NOW - 40, 0),
            ("last", NOW - 5, 0),
        ]:
            tx.enqueue([Message("RunTask", f"wf-{task}", task_id=task, delay_ms=delay)], at)
    with engine.backend.transaction() as tx:
        [held] = tx.claim("host:2:other", NOW - 40, NOW + 60_000, 1)
        assert held.task_id == "leased"
    with engine.backend.transaction() as tx:
        three = tx.claim(OWNER, NOW, NOW + 60_000, 3)
    with engine.backend.transaction() as tx:
        rest = tx.claim(OWNER, NOW, NOW + 60_000, 10)
    # "late" has the smallest id: the order is the due time's, then the id's.
    assert [m.task_id for m in three] == ["first", "second", "late"]
    assert [m.task_id for m in rest] == ["last"]  # "future" is not due, "leased" is held
    for msg in [*three, *rest]:
        assert (msg.kind, msg.workflow_id, msg.payload) == ("RunTask", f"wf-{msg.task_id}", {})
        assert (msg.lease_token, msg.attempts) == (1, 1)
    rows = engine.query(
        "SELECT task_id, lease_owner, lease_until, lease_token, attempts FROM queue_messages"
        " ORDER BY task_id"
    )
    assert [tuple(r) for r in rows] == [
        ("first", OWNER, NOW + 60_000, 1, 1),
        ("future", None, None, 0, 0),
        ("last", OWNER, NOW + 60_000, 1, 1),
        ("late", OWNER, NOW + 60_000, 1, 1),
        ("leased", "host:2:other", NOW + 60_000, 1, 1),
        ("second", OWNER, NOW + 60_000, 1, 1),
    ]


def test_an_expired_lease_is_claimed_again_with_the_next_token(make_engine: MakeEngine) -> None:
    engine = make_engine()
    with engine.backend.transaction() as tx:
        tx.enqueue([Message("RunTask", "wf", task_id="t")], NOW)
        [first] = tx.claim("host:2:gone", NOW, NOW + 100, 10)
    with engine.backend.transaction() as tx:
        assert tx.claim(OWNER, NOW + 100, NOW + 60_000, 10) == []  # held until NOW + 100
        [again] = tx.claim(OWNER, NOW + 101, NOW + 60_000, 10)
    assert again.id == first.id
    assert (first.lease_token, first.attempts) == (1, 1)
    assert (again.lease_token, again.attempts) == (2, 2)
    rows = engine.query("SELECT lease_owner, lease_until FROM queue_messages")
    assert [tuple(r) for r in rows] == [(OWNER, NOW + 60_000)]
