"""One bad task result ends its own task and never holds back anything else (issue 13).

Every case runs a poison workflow beside a healthy one on the same processor: the poison
task ends TERMINAL with an error naming what is wrong, and the healthy workflow finishes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from stabilize import (
    SignalError,
    StageExecution,
    TaskExecution,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
    emit_progress,
)
from stabilize.queue.processor.config import QueueProcessorConfig

HANG_GUARD = 30.0

S = WorkflowStatus
SURROGATE = "\udc80"  # what os.listdir() gives for a file name that is not UTF-8


def one_stage(ref: str, task: str) -> Workflow:
    stage = StageExecution(
        ref_id=ref, type=task, name=ref, tasks=[TaskExecution.create(f"{ref}.t", task)]
    )
    return Workflow.create(application="tests", name=ref, stages=[stage])


def chain(length: int) -> Workflow:
    stages = [
        StageExecution(
            ref_id=f"s{i}",
            type="ok",
            name=f"s{i}",
            requisite_stage_ref_ids={f"s{i - 1}"} if i else set(),
            tasks=[TaskExecution.create(f"s{i}.t", "ok")],
        )
        for i in range(length)
    ]
    return Workflow.create(application="tests", name="healthy", stages=stages)


def built_then_changed(change: Callable[[TaskResult], None]) -> Callable[[Any], TaskResult]:
    """A task whose result is valid when built and spoiled afterwards."""

    def run(stage: Any) -> TaskResult:
        result = TaskResult.success()
        change(result)
        return result

    return run


def surrogate_error(stage: Any) -> TaskResult:
    raise ValueError(f"cannot open {SURROGATE}.txt")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def unprintable(stage: Any) -> TaskResult:
    raise Unprintable


def bad_progress(stage: Any) -> TaskResult:
    emit_progress(stage, "listing", name=SURROGATE)
    return TaskResult.success()


def bad_context_update(stage: Any) -> TaskResult:
    raise TransientError("later", context_update={"seen": SURROGATE})


def deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


# (task function, text the stored error must contain)
POISON: dict[str, tuple[Callable[[Any], Any], list[str]]] = {
    "surrogate value": (
        lambda s: TaskResult.success(outputs={"v": SURROGATE}),
        ["'v'", "surrogate"],
    ),
    "surrogate key": (
        lambda s: TaskResult.success(outputs={SURROGATE: 1}),
        ["key", "surrogate"],
    ),
    "surrogate in context": (
        lambda s: TaskResult.success(context={"files": ["a", SURROGATE]}),
        ["'files'", "[1]", "surrogate"],
    ),
    "outputs a list": (
        lambda s: TaskResult(S.SUCCEEDED, outputs=[1, 2]),  # type: ignore[arg-type]
        ["outputs must be a dict", "list"],
    ),
    "status a string": (
        lambda s: TaskResult("SUCCEEDED"),  # type: ignore[arg-type]
        ["status must be a WorkflowStatus", "'SUCCEEDED'", "WorkflowStatus.SUCCEEDED"],
    ),
    "object value": (
        lambda s: TaskResult.success(outputs={"when": object()}),
        ["'when'", "object"],
    ),
    "too deep": (
        lambda s: TaskResult.success(outputs={"tree": deep(100_000)}),
        ["'tree'", "nested too deeply"],
    ),
    "outputs spoiled after building": (
        built_then_changed(lambda r: r.outputs.__setitem__("v", SURROGATE)),
        ["'v'", "surrogate"],
    ),
    "outputs replaced by a list after building": (
        built_then_changed(lambda r: setattr(r, "outputs", ["x"])),
        ["outputs must be a dict"],
    ),
    "status replaced by a string after building": (
        built_then_changed(lambda r: setattr(r, "status", "SUCCEEDED")),
        ["status must be a WorkflowStatus"],
    ),
    "not a TaskResult": (lambda s: 42, ["TaskResult", "int"]),
    "exception message with a surrogate": (surrogate_error, ["ValueError", "cannot open"]),
    "exception whose str() fails": (unprintable, ["Unprintable"]),
    "progress with a surrogate": (bad_progress, ["progress update", "'name'", "surrogate"]),
    "context_update with a surrogate": (bad_context_update, ["context_update", "'seen'"]),
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_a_poison_result_fails_only_its_own_task(make_engine, case):
    task, expected = POISON[case]
    engine = make_engine(
        config=QueueProcessorConfig(poll_frequency_ms=10, transient_max_attempts=2)
    )
    engine.registry.register("poison", task)
    engine.registry.register("ok", lambda s: TaskResult.success(outputs={"n": 1}))
    poison, healthy = one_stage("bad", "poison"), chain(5)
    for wf in (poison, healthy):
        engine.store.store(wf)
        engine.orchestrator.start(wf)

    engine.processor.process_all(timeout=30)

    assert engine.store.retrieve(healthy.id).status is S.SUCCEEDED
    stored = engine.store.retrieve(poison.id)
    assert stored.status is S.TERMINAL
    task_row = stored.stages[0].tasks[0]
    assert task_row.status is S.TERMINAL
    message = task_row.task_exception_details["message"]
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert engine.count("queue_messages") == 0


def test_an_error_text_with_a_surrogate_is_stored_escaped(make_engine):
    engine = make_engine()
    engine.registry.register("fails", lambda s: TaskResult.terminal(f"no file {SURROGATE}"))

    result = engine.run(one_stage("f", "fails"))

    assert result.status is S.TERMINAL
    details = result.stages[0].tasks[0].task_exception_details
    assert details["message"] == "no file \\udc80"


def test_a_service_worker_keeps_running_other_workflows(make_engine, poll):
    engine = make_engine()
    engine.registry.register("poison", lambda s: TaskResult.success(outputs={"v": SURROGATE}))
    engine.registry.register("ok", lambda s: TaskResult.success())
    engine.processor.start()
    poison = one_stage("bad", "poison")
    engine.store.store(poison)
    engine.orchestrator.start(poison)
    healthy = [chain(3) for _ in range(3)]
    for wf in healthy:
        engine.store.store(wf)
        engine.orchestrator.start(wf)

    poll(
        lambda: all(engine.store.retrieve(wf.id).status is S.SUCCEEDED for wf in healthy),
        "the healthy workflows to finish",
    )
    poll(
        lambda: engine.store.retrieve(poison.id).status is S.TERMINAL,
        "the poison workflow to end TERMINAL",
    )


def corrupt(engine: Any, workflow_id: str) -> None:
    """Write a workflow row no reader can parse, as a bad manual edit or migration would."""
    backend = engine.backend
    sql = "UPDATE workflows SET body = ?, version = version + 100 WHERE id = ?"
    with backend.transaction() as tx:
        tx.cur.execute(sql.replace("?", backend.placeholder), ("{not json", workflow_id))
    backend.cache.evict(workflow_id)


def test_a_message_that_cannot_be_processed_is_dead_lettered_alone(make_engine):
    engine = make_engine()
    engine.registry.register("ok", lambda s: TaskResult.success())
    broken, healthy = chain(2), [chain(3) for _ in range(3)]
    for wf in (broken, *healthy):
        engine.store.store(wf)
        engine.orchestrator.start(wf)
    corrupt(engine, broken.id)

    engine.processor.process_all(timeout=30)

    for wf in healthy:
        assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    rows = engine.query("SELECT workflow_id, reason FROM dead_letters")
    assert [r[0] for r in rows] == [broken.id]
    assert "could not be processed" in rows[0][1]
    assert engine.count("queue_messages") == 0


def test_a_result_that_cannot_be_committed_does_not_hold_back_the_batch(make_engine, gate, poll):
    engine = make_engine(lock_duration=timedelta(seconds=1))
    started = threading.Event()

    def blocked(stage: Any) -> TaskResult:
        started.set()
        gate.wait(HANG_GUARD)
        return TaskResult.success()

    engine.registry.register("blocked", blocked)
    engine.registry.register("ok", lambda s: TaskResult.success())
    broken = one_stage("b", "blocked")
    engine.store.store(broken)
    engine.orchestrator.start(broken)
    while not started.is_set():
        engine.processor.process_one()
    corrupt(engine, broken.id)
    healthy = chain(3)
    engine.store.store(healthy)
    engine.orchestrator.start(healthy)
    gate.set()

    engine.processor.process_all(timeout=30)

    assert engine.store.retrieve(healthy.id).status is S.SUCCEEDED
    rows = engine.query("SELECT workflow_id FROM dead_letters")
    assert [r[0] for r in rows] == [broken.id]
    assert engine.count("queue_messages") == 0


def test_signal_data_that_cannot_be_stored_is_refused_and_changes_nothing(make_engine):
    engine = make_engine()

    def wait(stage: Any) -> TaskResult:
        if "_signal_name" in stage.context:
            return TaskResult.success(outputs={"got": stage.context["_signal_data"]})
        return TaskResult.suspend()

    engine.registry.register("wait", wait)
    wf = one_stage("gate", "wait")
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)
    before = engine.store.retrieve(wf.id)
    assert before.stages[0].status is S.SUSPENDED

    with pytest.raises(SignalError, match=r"signal 'go'\['data'\]\['path'\].*surrogate"):
        engine.orchestrator.signal(wf.id, "gate", "go", {"path": SURROGATE})
    assert engine.store.retrieve(wf.id).version == before.version

    engine.orchestrator.signal(wf.id, "gate", "go", {"path": "ok"})
    engine.processor.process_all(timeout=30)
    done = engine.store.retrieve(wf.id)
    assert done.status is S.SUCCEEDED
    assert done.stages[0].outputs["got"] == {"path": "ok"}
