"""Replay of generated workflows: the event log rebuilds the stored state, at every sequence.

Hypothesis draws small workflows (a few stages, random requisites, tasks that succeed,
fail, fail softly, retry or jump, writing random JSON outputs and context); each runs on a
fresh database (a SQLite file, a PostgreSQL schema) with event recording on. Then the log's
sequences are 1..N with no gap or duplicate, the state replayed from the whole log is the
stored state (with the types JSON gives back: keys ``1`` read as ``"1"``, ``True`` is not
``1``), and every prefix of the log replays to a consistent state: events other than
``state.changed`` change nothing, and the end of the workflow or of a task is there at the
sequence that announces it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from stabilize import (
    QueueProcessorConfig,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    TransientError,
    Workflow,
)
from stabilize.events import EventReplayer, EventStore, configure_event_sourcing

if TYPE_CHECKING:
    from conftest import Databases

KINDS = ["ok", "ok", "ok", "soft", "fail", "flaky", "jump"]
"""What a task does (``ok`` most often, so that most workflows get far)."""


@dataclass
class StagePlan:
    """One generated stage: its requisites, its tasks' kinds, and what they write."""

    ref: str
    requires: list[str]
    tasks: list[str]
    context: dict[Any, Any]
    outputs: dict[Any, Any]
    written: dict[Any, Any] = field(default_factory=dict)


# Live values as a task returns them: JSON stores int, bool and None keys as strings and
# tuples as lists; letters only in string keys, so that no two keys become one string.
keys = st.one_of(
    st.text("abcdéλ", min_size=1, max_size=3), st.integers(-5, 5), st.booleans(), st.none()
)
values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([0, 1, 1.0, True, -0.0, 10**30]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=6),
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(keys, inner, max_size=3)
    ),
    max_leaves=8,
)
payloads = st.dictionaries(keys, values, max_size=3)


@st.composite
def plans(draw: st.DrawFn) -> list[StagePlan]:
    count = draw(st.integers(1, 5))
    stages: list[StagePlan] = []
    for k in range(count):
        earlier = [s.ref for s in stages]
        requires = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=2)) if k else []
        tasks = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=2))
        if not requires:  # a jump goes back to a requisite
            tasks = ["ok" if t == "jump" else t for t in tasks]
        stages.append(
            StagePlan(
                f"s{k}",
                sorted(requires),
                tasks,
                draw(payloads),
                draw(payloads),
                draw(payloads),
            )
        )
    return stages


def build(plan: list[StagePlan]) -> Workflow:
    stages = []
    for p in plan:
        last = len(p.tasks) - 1
        tasks = [
            TaskExecution.create(f"{p.ref}-{i}", kind, stage_start=i == 0, stage_end=i == last)
            for i, kind in enumerate(p.tasks)
        ]
        stages.append(
            StageExecution(
                ref_id=p.ref,
                type="generated",
                name=p.ref,
                requisite_stage_ref_ids=set(p.requires),
                context=dict(p.context),
                tasks=tasks,
            )
        )
    return Workflow.create("replay", "generated", stages)


def registry(plan: list[StagePlan]) -> TaskRegistry:
    by_ref = {p.ref: p for p in plan}
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def attempt(s: StageExecution) -> int:
        with lock:
            calls[s.idempotency_key] = calls.get(s.idempotency_key, 0) + 1
            return calls[s.idempotency_key]

    def ok(s: StageExecution) -> TaskResult:
        p = by_ref[s.ref_id]
        return TaskResult.success(outputs=p.outputs, context={**p.written, "calls": attempt(s)})

    def soft(s: StageExecution) -> TaskResult:
        return TaskResult.failed_continue("soft", outputs=by_ref[s.ref_id].outputs)

    def fail(s: StageExecution) -> TaskResult:
        return TaskResult.terminal("boom", context=by_ref[s.ref_id].written)

    def flaky(s: StageExecution) -> TaskResult:
        if attempt(s) < 2:
            raise TransientError("not yet", retry_after=0, context_update={"tried": True})
        return ok(s)

    def jump(s: StageExecution) -> TaskResult:
        if int(s.context.get("_jump_count", 0)) < 1:  # this stage's own jumps so far
            return TaskResult.jump_to(by_ref[s.ref_id].requires[0], context={"back": 1})
        return ok(s)

    reg = TaskRegistry()
    for name, fn in [("ok", ok), ("soft", soft), ("fail", fail), ("flaky", flaky), ("jump", jump)]:
        reg.register(name, fn)
    return reg


def exact(wf: Workflow) -> str:
    """The workflow and its stages as JSON text: equal texts, equal values and types."""
    stages = sorted((s.to_dict() for s in wf.stages), key=lambda d: d["id"])
    return json.dumps([wf.to_dict(), stages], sort_keys=True, allow_nan=False)


STATUS_EVENTS = {"workflow.completed", "workflow.failed", "workflow.canceled"}
TASK_EVENTS = {"task.completed", "task.failed"}


# Each example runs on a fresh database of its own (databases.new()): the function-scoped
# fixtures are only its factories, hence the suppressed health check.
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans())
@example(
    plan=[
        StagePlan("s0", [], ["ok"], {1: "int key", "t": True}, {None: (1, 2)}, {"t": 1}),
        StagePlan("s1", ["s0"], ["jump", "ok"], {}, {"f": 1, 2: [True]}, {"t": 1}),
        StagePlan("s2", ["s1"], ["flaky"], {}, {}, {"x": -0.0}),
    ]
)
@example(
    plan=[
        StagePlan("s0", [], ["ok"], {}, {"v": True}, {}),
        StagePlan("s1", ["s0"], ["fail"], {}, {}, {"a": {"b": 1}}),
        StagePlan("s2", ["s0"], ["soft", "ok"], {}, {"v": 1}, {}),
    ]
)
def test_generated_workflows_replay_exactly_at_every_sequence(
    plan: list[StagePlan], make_engine: Any, databases: Databases
) -> None:
    db = databases.new()
    events = db.event_store()
    config = QueueProcessorConfig(poll_frequency_ms=5, max_workers=2)
    engine = make_engine(db, config, registry=registry(plan))
    try:
        run_and_check(plan, engine, events)
    finally:
        configure_event_sourcing()
        # No thread of an example may outlive it: psycopg's pool draws from the global
        # random module, which Hypothesis watches while it draws the next example.
        engine.processor.stop(wait=True)
        events.close()
        engine.backend.close()


def run_and_check(plan: list[StagePlan], engine: Any, events: EventStore) -> None:
    configure_event_sourcing(events)
    wf = build(plan)
    stored = engine.run(wf)
    configure_event_sourcing()
    assert stored.status.is_complete, stored.status
    note_event(f"workflow {stored.status.value}")

    log = events.get_events(wf.id)
    if any(e.event_type == "jump.executed" for e in log):
        note_event("jumped")
    sequences = [e.sequence for e in log]
    assert sequences == list(range(1, len(log) + 1))  # no gap, no duplicate
    assert log[0].event_type == "workflow.created"
    assert stored.event_sequence == len(log)

    replayer = EventReplayer(events)
    assert exact(replayer.rebuild_workflow_state(wf.id)) == exact(stored)

    before = None
    for event in log:
        state = replayer.rebuild_workflow_state(wf.id, as_of_sequence=event.sequence)
        text = exact(state)
        if event.sequence == 1:
            assert {s.status.value for s in state.stages} == {"NOT_STARTED"}
        elif event.event_type != "state.changed":
            assert text == before, f"{event.event_type} at {event.sequence} changed the state"
        if event.event_type in STATUS_EVENTS:
            assert state.status.value == event.data["status"]
        if event.event_type in TASK_EVENTS:
            stage = next(s for s in state.stages if s.id == event.data["stage_id"])
            task = next(t for t in stage.tasks if t.id == event.entity_id)
            assert task.status.value == event.data["status"]
        before = text
    assert before == exact(stored)
