"""Writes of several transitions in one transaction: what is stored is what was written last.

On PostgreSQL the writes of a transaction are gathered and sent as one statement (rows
written twice are written once, with their last values); these tests pin down that every
later statement, and the committed state, see them as if each had been sent on its own.
"""

from __future__ import annotations

import json
from typing import Any

from stabilize import StageExecution, TaskExecution, TaskResult, Workflow
from stabilize.engine.messages import RUN_TASK, Effects, Message


def two_stages() -> Workflow:
    return Workflow.create(
        application="tests",
        name="writes",
        stages=[
            StageExecution(
                ref_id=ref,
                type="work",
                name=ref,
                requisite_stage_ref_ids=set(requires),
                tasks=[TaskExecution.create(ref, "work", stage_start=True, stage_end=True)],
            )
            for ref, requires in (("a", ()), ("b", ("a",)))
        ],
    )


def stored(engine: Any, wf: Workflow) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    [(body, version)] = engine.query("SELECT body, version FROM workflows WHERE id = ?", (wf.id,))
    stages = engine.query(
        "SELECT body FROM stages WHERE workflow_id = ? ORDER BY position", (wf.id,)
    )
    return json.loads(body), int(version), [json.loads(b) for (b,) in stages]


def test_a_row_written_by_several_transitions_keeps_the_last_values(make_engine):
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    wf = two_stages()
    engine.store.store(wf)
    with engine.backend.transaction() as tx:
        loaded = tx.workflow(wf.id)
        assert loaded is not None
        a = loaded.stage_by_ref_id("a")
        a.context["step"] = 1
        loaded.context["note"] = "full update"
        fx = Effects(workflow_changed=True)
        fx.touch(a)
        tx.save(loaded, fx, 1_000)  # workflow body and stage a
        a.context["step"] = 2
        fx = Effects()
        fx.touch(a)
        tx.save(loaded, fx, 1_001)  # stage a again, the workflow only bumped
        loaded.stage_by_ref_id("b").context["step"] = 3
        fx = Effects()
        fx.touch(loaded.stage_by_ref_id("b"))
        tx.save(loaded, fx, 1_002)
        final_version = loaded.version

    body, version, stages = stored(engine, wf)
    assert body["context"] == {"note": "full update"}  # the bump kept the full update's body
    assert version == final_version == 4  # stored at 1, three transitions
    assert [s["context"] for s in stages] == [{"step": 2}, {"step": 3}]
    assert engine.store.retrieve(wf.id).stage_by_ref_id("a").context == {"step": 2}


def test_messages_enqueued_in_a_transaction_are_seen_by_its_later_statements(make_engine):
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    first, second = two_stages(), two_stages()
    engine.store.store(first)
    engine.store.store(second)
    owner = "here:1:x"
    with engine.backend.transaction() as tx:
        leased = tx.enqueue(
            [
                Message(RUN_TASK, first.id, first.stages[0].id, first.stages[0].tasks[0].id),
                Message(RUN_TASK, second.id, second.stages[0].id, second.stages[0].tasks[0].id),
            ],
            5_000,
            lease_owner=owner,
            lease_until=60_000,
            lease_limit=1,
        )
        assert [m.workflow_id for m in leased] == [first.id]
        # A statement after the enqueue sees the new rows: the second workflow's message
        # (not leased on insert) is dropped, the first one's stays.
        tx.cur.execute(tx.q["drop_workflow_messages"], (second.id,))
        assert tx.ack(leased[0], owner)  # and the leased one can be acknowledged at once
        more = tx.enqueue(
            [Message(RUN_TASK, first.id, first.stages[1].id, first.stages[1].tasks[0].id)],
            5_001,
        )
        assert more == []
    rows = engine.query("SELECT id, workflow_id, stage_id, lease_owner FROM queue_messages")
    assert [(r[1], r[2], r[3]) for r in rows] == [(first.id, first.stages[1].id, None)]
    assert rows[0][0] > leased[0].id  # ids follow the order of insertion


def test_commits_that_leave_work_to_claim_are_counted(make_engine):
    # Backend.claimable_commits moves for a commit that queued a due message nobody
    # leased, or released leases; not for leased or delayed messages alone. A busy
    # processor claims at its next step when it moved (busy_claim_interval_ms).
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    wf = two_stages()
    engine.store.store(wf)
    backend = engine.backend
    owner = "here:1:x"
    run_a = Message(RUN_TASK, wf.id, wf.stages[0].id, wf.stages[0].tasks[0].id)
    run_b = Message(RUN_TASK, wf.id, wf.stages[1].id, wf.stages[1].tasks[0].id)

    def counted(work: Any) -> int:
        before = backend.claimable_commits
        with backend.transaction() as tx:
            work(tx)
        return int(backend.claimable_commits - before)

    leased_only = counted(
        lambda tx: tx.enqueue([run_a], 5_000, lease_owner=owner, lease_until=60_000, lease_limit=1)
    )
    delayed_only = counted(
        lambda tx: tx.enqueue([Message(RUN_TASK, wf.id, "s", "t", delay_ms=1_000)], 5_000)
    )
    released = counted(lambda tx: tx.release_owner(owner))
    due_and_free = counted(lambda tx: tx.enqueue([run_b], 5_000))
    assert (leased_only, delayed_only, released, due_and_free) == (0, 0, 1, 1)
