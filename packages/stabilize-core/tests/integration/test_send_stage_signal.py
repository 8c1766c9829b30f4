"""send_stage_signal: a signal to a stored workflow's stage in one transaction, with a guard.

The public core API ``stabilize.hitl`` sends its decisions through (issue 18); the
orchestrator's ``signal`` takes the same path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from stabilize import (
    SignalError,
    StageExecution,
    TaskExecution,
    Workflow,
    WorkflowNotFoundError,
    WorkflowStatus,
)
from stabilize.orchestrator import send_stage_signal

if TYPE_CHECKING:
    from integration.conftest import Engine

S = WorkflowStatus


def workflow(*refs: str) -> Workflow:
    stages = [
        StageExecution(
            ref_id=ref,
            type="wait_for_signal",
            name=ref,
            requisite_stage_ref_ids={refs[i - 1]} if i else set(),
            tasks=[TaskExecution.create(ref, "wait_for_signal")],
        )
        for i, ref in enumerate(refs)
    ]
    return Workflow.create(application="tests", name="signals", stages=stages)


def started(engine: Engine, wf: Workflow) -> Workflow:
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=10)
    return engine.store.retrieve(wf.id)


def test_a_guard_sees_the_stored_stage_and_a_signal_it_lets_through_is_delivered(make_engine):
    engine = make_engine()
    wf = started(engine, workflow("gate"))
    seen: list[tuple[str, S, str | None]] = []

    def guard(stage: StageExecution) -> None:
        seen.append((stage.ref_id, stage.status, stage.workflow_id))

    send_stage_signal(engine.queue, wf.id, "gate", "go", {"n": 1}, user="alice", guard=guard)
    engine.processor.process_all(timeout=10)

    final = engine.store.retrieve(wf.id)
    assert seen == [("gate", S.SUSPENDED, wf.id)]
    assert final.status is S.SUCCEEDED
    gate = final.stage_by_ref_id("gate")
    assert gate.outputs == {"signal": "go", "signal_data": {"n": 1}, "signal_user": "alice"}


def test_a_guard_that_raises_refuses_the_signal_and_nothing_changes(make_engine):
    engine = make_engine()
    wf = started(engine, workflow("gate"))
    before = (engine.counts(), engine.store.retrieve(wf.id).to_dict())

    def refuse(stage: StageExecution) -> None:
        raise SignalError(f"stage {stage.ref_id!r} takes no signal from you")

    with pytest.raises(SignalError, match="stage 'gate' takes no signal from you"):
        send_stage_signal(engine.queue, wf.id, "gate", "go", guard=refuse)

    assert (engine.counts(), engine.store.retrieve(wf.id).to_dict()) == before
    engine.processor.process_all(timeout=10)
    assert engine.store.retrieve(wf.id).stage_by_ref_id("gate").status is S.SUSPENDED


def test_a_guard_reads_what_an_earlier_signal_left_in_the_same_database(make_engine):
    """The hitl's one-decision-per-gate check: an early signal is kept, a second refused."""
    engine = make_engine()
    wf = started(engine, workflow("first", "gate"))

    def once(stage: StageExecution) -> None:
        if stage.pending_signals:
            raise SignalError(f"has one already ({stage.pending_signals[0]['name']})")

    send_stage_signal(engine.queue, wf.id, "gate", "approve", guard=once)
    with pytest.raises(SignalError, match=r"has one already \(approve\)"):
        send_stage_signal(engine.queue, wf.id, "gate", "reject", guard=once)

    pending = engine.store.retrieve(wf.id).stage_by_ref_id("gate").pending_signals
    assert [p["name"] for p in pending] == ["approve"]


def test_the_guard_is_not_asked_about_a_missing_stage_or_an_ended_workflow(make_engine):
    engine = make_engine()
    wf = started(engine, workflow("gate"))
    asked: list[str] = []

    def guard(stage: StageExecution) -> None:
        asked.append(stage.ref_id)

    with pytest.raises(SignalError, match="has no stage 'nope'"):
        send_stage_signal(engine.queue, wf.id, "nope", "go", guard=guard)
    engine.orchestrator.cancel(wf.id)
    with pytest.raises(SignalError, match="takes no more signals"):
        send_stage_signal(engine.queue, wf.id, "gate", "go", guard=guard)
    with pytest.raises(WorkflowNotFoundError):
        send_stage_signal(engine.queue, "wf_missing", "gate", "go", guard=guard)
    assert asked == []


def test_not_persistent_refuses_a_stage_that_does_not_wait_yet(make_engine):
    engine = make_engine()
    wf = started(engine, workflow("first", "gate"))

    with pytest.raises(SignalError, match="not waiting for a signal yet"):
        send_stage_signal(engine.queue, wf.id, "gate", "go", persistent=False)

    assert engine.store.retrieve(wf.id).stage_by_ref_id("gate").pending_signals == []


def test_the_clock_dates_the_signal_and_the_orchestrator_passes_its_own(make_engine, clock):
    engine = make_engine(clock=clock)
    wf = started(engine, workflow("first", "gate"))

    send_stage_signal(engine.queue, wf.id, "gate", "a", clock=lambda: 1_800_000_000.5)
    engine.orchestrator.signal(wf.id, "gate", "b", user="bob")

    pending = engine.store.retrieve(wf.id).stage_by_ref_id("gate").pending_signals
    assert [(p["name"], p["at"], p["user"]) for p in pending] == [
        ("a", 1_800_000_000_500, None),
        ("b", int(clock() * 1000), "bob"),
    ]
