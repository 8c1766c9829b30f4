"""Whole workflows through ``process_all`` on both backends (the ``engine_url`` fixture)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from stabilize import (
    StageExecution,
    TaskResult,
    TransientError,
    WorkflowStatus,
)
from stabilize.queue.processor.config import QueueProcessorConfig

S = WorkflowStatus


def fast_retries() -> QueueProcessorConfig:
    return QueueProcessorConfig(
        poll_frequency_ms=10,
        transient_backoff_base_seconds=0.01,
        transient_backoff_max_seconds=0.05,
        transient_jitter=0.0,
    )


def test_linear_chain_passes_outputs_downstream(make_engine, build):
    engine = make_engine()
    seen: list[dict[str, Any]] = []
    engine.registry.register("first", lambda s: TaskResult.success(outputs={"a": 1}))
    engine.registry.register("second", lambda s: TaskResult.success(outputs={"b": s.context["a"]}))

    def last(s: StageExecution) -> TaskResult:
        seen.append(dict(s.context))
        return TaskResult.success()

    engine.registry.register("last", last)

    result = engine.run(
        build.workflow(
            build.stage("one", "first"),
            build.stage("two", "second", {"one"}),
            build.stage("three", "last", {"two"}, context={"own": True}),
            region="eu",
        )
    )

    assert result.status is S.SUCCEEDED
    assert seen == [{"region": "eu", "a": 1, "b": 1, "own": True}]
    assert [s.status for s in result.stages] == [S.SUCCEEDED] * 3


def test_fan_out_and_join(make_engine, build, executions):
    engine = make_engine()
    joined: list[dict[str, Any]] = []
    engine.registry.register("root", lambda s: TaskResult.success(outputs={"seed": 7}))
    for name in ("x", "y", "z"):

        def branch(s: StageExecution, n: str = name) -> TaskResult:
            executions.record(s)
            return TaskResult.success(outputs={n: s.context["seed"] + 1})

        engine.registry.register(name, branch)

    def join(s: StageExecution) -> TaskResult:
        joined.append(dict(s.context))
        return TaskResult.success()

    engine.registry.register("join", join)

    result = engine.run(
        build.workflow(
            build.stage("root", "root"),
            build.stage("x", "x", {"root"}),
            build.stage("y", "y", {"root"}),
            build.stage("z", "z", {"root"}),
            build.stage("join", "join", {"x", "y", "z"}),
        )
    )

    assert result.status is S.SUCCEEDED
    assert joined == [{"seed": 7, "x": 8, "y": 8, "z": 8}]
    assert sorted(ref for _, ref in executions.counts) == ["x", "y", "z"]
    assert set(executions.counts.values()) == {1}


def test_jump_loop_runs_three_passes(make_engine, build):
    engine = make_engine()
    runs: Counter[str] = Counter()

    def first(s: StageExecution) -> TaskResult:
        runs["s1"] += 1
        return TaskResult.success(outputs={"pass": s.context.get("pass", 1)})

    def last(s: StageExecution) -> TaskResult:
        runs["s2"] += 1
        current = s.context["pass"]
        if current < 3:
            return TaskResult.jump_to("s1", context={"pass": current + 1})
        return TaskResult.success(outputs={"final": current})

    engine.registry.register("first", first)
    engine.registry.register("last", last)

    result = engine.run(
        build.workflow(build.stage("s1", "first"), build.stage("s2", "last", {"s1"}))
    )

    assert result.status is S.SUCCEEDED
    assert runs == {"s1": 3, "s2": 3}
    assert result.stage_by_ref_id("s2").outputs == {"final": 3}


def test_transient_error_retries_with_context_update(make_engine, build):
    engine = make_engine(config=fast_retries())
    attempts: list[dict[str, Any]] = []

    def flaky(s: StageExecution) -> TaskResult:
        attempts.append(dict(s.context))
        done = s.context.get("processed", 0)
        if len(attempts) < 3:
            raise TransientError("rate limited", context_update={"processed": done + 10})
        return TaskResult.success(outputs={"processed": done})

    engine.registry.register("flaky", flaky)

    result = engine.run(build.workflow(build.stage("s", "flaky", context={"batch": "x"})))

    assert result.status is S.SUCCEEDED
    assert [a.get("processed") for a in attempts] == [None, 10, 20]
    assert result.stages[0].tasks[0].retry_count == 2
    assert result.stages[0].outputs == {"processed": 20}


def test_exception_fails_the_workflow_and_skips_downstream(make_engine, build):
    engine = make_engine()
    ran: list[str] = []

    def boom(s: StageExecution) -> TaskResult:
        raise RuntimeError("disk on fire")

    def never(s: StageExecution) -> TaskResult:
        ran.append(s.ref_id)
        return TaskResult.success()

    engine.registry.register("boom", boom)
    engine.registry.register("never", never)

    result = engine.run(build.workflow(build.stage("a", "boom"), build.stage("b", "never", {"a"})))

    assert result.status is S.TERMINAL
    assert ran == []
    failed = result.stage_by_ref_id("a")
    assert failed.status is S.TERMINAL
    details = failed.tasks[0].task_exception_details
    assert details["exception_type"] == "RuntimeError"
    assert "disk on fire" in details["message"]
    assert engine.queue.size() == 0


def test_terminal_result_fails_the_workflow(make_engine, build):
    engine = make_engine()
    engine.registry.register("no", lambda s: TaskResult.terminal("not today"))

    result = engine.run(build.workflow(build.stage("a", "no")))

    assert result.status is S.TERMINAL
    assert result.stages[0].status is S.TERMINAL


def test_chain_of_ten_stages_commits_about_once_per_stage(make_engine, build):
    engine = make_engine()
    engine.registry.register("step", lambda s: TaskResult.success())

    result = engine.run(build.chain("step", 10))

    assert result.status is S.SUCCEEDED
    assert engine.processor.commits <= 12
