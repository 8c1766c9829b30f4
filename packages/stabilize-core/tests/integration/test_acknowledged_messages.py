"""Acknowledged messages, and on SQLite their ids taken by the next messages.

A message acknowledged in a transaction is deleted; on SQLite a message the same
transaction enqueues takes its id (no new rowid). Whatever an id's history, an earlier
lease of it must never match again, and messages of one transaction keep their order.
"""

from __future__ import annotations

from typing import Any

import pytest

from stabilize import StageExecution, TaskExecution, TaskResult, Workflow
from stabilize.engine.messages import RUN_TASK, Message
from stabilize.records import ClaimedMessage

OWNER = "here:1:x"
OTHER = "there:2:y"


def chain(n: int = 3) -> Workflow:
    return Workflow.create(
        application="tests",
        name="acks",
        stages=[
            StageExecution(
                ref_id=f"s{i}",
                type="work",
                name=f"s{i}",
                requisite_stage_ref_ids={f"s{i - 1}"} if i else set(),
                tasks=[TaskExecution.create(f"s{i}", "work", stage_start=True, stage_end=True)],
            )
            for i in range(n)
        ],
    )


def run_task(wf: Workflow, i: int) -> Message:
    stage = wf.stages[i]
    return Message(RUN_TASK, wf.id, stage.id, stage.tasks[0].id)


def leased(engine: Any, messages: list[Message], now: int = 5_000) -> list[ClaimedMessage]:
    with engine.backend.transaction() as tx:
        got: list[ClaimedMessage] = tx.enqueue(
            messages, now, lease_owner=OWNER, lease_until=now + 60_000, lease_limit=len(messages)
        )
    return got


def queue_rows(engine: Any) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in engine.query(
            "SELECT id, workflow_id, stage_id, lease_owner, lease_token FROM queue_messages "
            "ORDER BY id"
        )
    ]


@pytest.fixture
def engine(make_engine: Any) -> Any:
    made = make_engine()
    made.registry.register("work", lambda s: TaskResult.success())
    return made


def test_acknowledged_messages_are_gone_at_the_commit(engine: Any) -> None:
    wf = chain()
    engine.store.store(wf)
    first, second = leased(engine, [run_task(wf, 0), run_task(wf, 1)])
    with engine.backend.transaction() as tx:
        assert tx.ack_many([first, second], OWNER) == {first.id, second.id}
        assert not tx.ack(first, OWNER)  # acknowledged once only
    assert queue_rows(engine) == []


def test_a_rolled_back_acknowledgement_leaves_the_message_and_its_lease(engine: Any) -> None:
    wf = chain()
    engine.store.store(wf)
    [msg] = leased(engine, [run_task(wf, 0)])

    def ack_then_fail() -> None:
        with engine.backend.transaction() as tx:
            assert tx.ack(msg, OWNER)
            tx.enqueue(
                [run_task(wf, 1)], 5_001, lease_owner=OWNER, lease_until=9_000, lease_limit=1
            )
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        ack_then_fail()
    assert queue_rows(engine) == [(msg.id, wf.id, wf.stages[0].id, OWNER, msg.lease_token)]
    with engine.backend.transaction() as tx:
        assert tx.ack(msg, OWNER)


def test_no_claim_takes_a_message_acknowledged_in_the_same_transaction(engine: Any) -> None:
    # The lease ran out (lease_until 60_000 < now) but nobody took it over: acknowledging
    # still works, and a claim in the same transaction must not lease the message again.
    wf = chain()
    engine.store.store(wf)
    [msg] = leased(engine, [run_task(wf, 0)], now=0)
    now = 120_000
    with engine.backend.transaction() as tx:
        assert tx.ack(msg, OWNER)
        assert tx.claim(OTHER, now, now + 60_000, 10) == []
    assert queue_rows(engine) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL inserts anew
def test_the_next_message_takes_the_id_and_old_leases_never_match(engine: Any) -> None:
    wf = chain()
    engine.store.store(wf)
    [msg] = leased(engine, [run_task(wf, 0)])
    with engine.backend.transaction() as tx:
        assert tx.ack(msg, OWNER)
        [nxt] = tx.enqueue(
            [run_task(wf, 1)], 5_001, lease_owner=OWNER, lease_until=65_001, lease_limit=1
        )
    assert nxt.id == msg.id
    assert nxt.lease_token > msg.lease_token
    assert queue_rows(engine) == [(msg.id, wf.id, wf.stages[1].id, OWNER, nxt.lease_token)]
    with engine.backend.transaction() as tx:
        assert not tx.ack(msg, OWNER)  # the first message's lease fences nothing now
        assert tx.extend_leases(OWNER, [(msg.id, msg.lease_token)], 99_000) == [msg.id]
        assert tx.extend_leases(OWNER, [(nxt.id, nxt.lease_token)], 99_000) == []
    # Released and claimed by another worker: the token keeps rising.
    with engine.backend.transaction() as tx:
        tx.release_owner(OWNER)
        [again] = tx.claim(OTHER, 6_000, 66_000, 10)
    assert again.id == msg.id
    assert again.lease_token > nxt.lease_token
    with engine.backend.transaction() as tx:
        assert not tx.ack(nxt, OWNER)
        assert tx.ack(again, OTHER)
    assert queue_rows(engine) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL inserts anew
def test_messages_of_one_transaction_are_claimed_in_the_order_they_were_sent(
    engine: Any,
) -> None:
    # Freed ids are taken only above every id already given in the transaction, so that
    # messages due at the same time keep the order they were enqueued in.
    a, b = chain(), chain()
    engine.store.store(a)
    engine.store.store(b)
    msg_b, msg_a = leased(engine, [run_task(b, 0), run_task(a, 0)])
    assert msg_b.id < msg_a.id
    with engine.backend.transaction() as tx:
        assert tx.ack_many([msg_b, msg_a], OWNER) == {msg_a.id, msg_b.id}
        # a's message first: it takes a's id; b's may not take its own (lower) one.
        tx.enqueue([run_task(a, 1)], 5_001)
        tx.enqueue([run_task(b, 1)], 5_001)
    rows = queue_rows(engine)
    assert [(r[1], r[2]) for r in rows] == [(a.id, a.stages[1].id), (b.id, b.stages[1].id)]
    assert rows[0][0] == msg_a.id
    assert rows[1][0] > msg_a.id
    with engine.backend.transaction() as tx:
        order = [m.workflow_id for m in tx.claim(OWNER, 5_001, 65_001, 10)]
    assert order == [a.id, b.id]


def test_a_chain_run_by_the_processor_leaves_no_message_behind(engine: Any) -> None:
    wf = chain(20)
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)
    done = engine.store.retrieve(wf.id)
    assert done.status.name == "SUCCEEDED"
    assert [s.status.name for s in done.stages] == ["SUCCEEDED"] * 20
    assert queue_rows(engine) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL inserts anew
def test_a_chain_passes_one_id_from_stage_to_stage(engine: Any) -> None:
    # Each stage's commit acknowledges its message and sends the next stage's: the new
    # message takes the old one's id, so the chain uses no new message id after its start.
    wf = chain(20)
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)
    assert engine.store.retrieve(wf.id).status.name == "SUCCEEDED"
    [(last_id,)] = engine.query("SELECT seq FROM sqlite_sequence WHERE name = 'queue_messages'")
    assert last_id <= 2
