"""DatabaseSource on real SQLite files and PostgreSQL schemas, with a worker running."""

from __future__ import annotations

import threading
import time

import pytest
from monitor_support import Engine, gated_workflow, plain_workflow, wait_for

from stabilize import StageExecution, TaskExecution, Workflow
from stabilize.persistence import overview
from stabilize_monitor import Filters, summary_text


def run_some(engine: Engine) -> tuple[Workflow, Workflow, Workflow]:
    """A gated billing workflow waiting, a finished report, and a second billing one."""
    gated = engine.start(gated_workflow())
    report = engine.start(plain_workflow())
    other = engine.start(gated_workflow(name="Refund run"))
    wait_for(lambda: engine.status(report.id) == "SUCCEEDED", "the report to finish")
    for wf in (gated, other):
        wait_for(
            lambda wf=wf: engine.stage_status(wf.id, "approve") == "SUSPENDED",  # type: ignore[misc]
            "the gate to wait",
        )
    return gated, report, other


def test_lists_filters_and_counts(engine: Engine) -> None:
    gated, report, other = run_some(engine)
    source = engine.source
    now = time.time()
    rows = source.workflows(Filters(), 10, now)
    assert [r.id for r in rows] == [other.id, report.id, gated.id]
    waiting = rows[2]
    assert (waiting.application, waiting.name, waiting.status) == (
        "billing",
        "Invoice run",
        "RUNNING",  # a workflow waiting at a gate is still running; its stage is suspended
    )
    assert (waiting.stages_done, waiting.stages_total) == (1, 3)
    assert waiting.current_stages == ("approve",)
    assert waiting.start_time is not None
    assert waiting.end_time is None
    finished = rows[1]
    assert (finished.stages_done, finished.stages_total, finished.current_stages) == (3, 3, ())
    assert finished.end_time is not None

    assert [r.id for r in source.workflows(Filters(application="reports"), 10, now)] == [report.id]
    running = source.workflows(Filters(status="running"), 10, now)
    assert [r.id for r in running] == [other.id, gated.id]
    assert source.workflows(Filters(status="failed"), 10, now) == []
    assert [r.id for r in source.workflows(Filters(search="REFUND"), 10, now)] == [other.id]
    assert len(source.workflows(Filters(status="recent"), 10, now)) == 3
    assert source.workflows(Filters(status="recent"), 10, now + 2 * 86400) == []
    assert [r.id for r in source.workflows(Filters(), 1, now)] == [other.id]

    assert source.counts(None) == {"RUNNING": 2, "SUCCEEDED": 1}
    assert source.counts("billing") == {"RUNNING": 2}
    assert source.applications() == ["billing", "reports"]
    assert source.finished_stages() == 3 + 1 + 1


def test_search_treats_like_wildcards_as_text(engine: Engine) -> None:
    source = engine.source
    odd = Workflow.create(
        application="x",
        name="100%_done",
        stages=[
            StageExecution(
                ref_id="a",
                type="work",
                tasks=[TaskExecution.create("a", "work", stage_start=True, stage_end=True)],
            )
        ],
    )
    source.store.store(odd)
    plain = Workflow.create(application="x", name="1000 done", stages=[])
    source.store.store(plain)
    found = source.workflows(Filters(search="0%_"), 10, time.time())
    assert [r.id for r in found] == [odd.id]


def test_queue_stats_count_leases_per_worker(engine: Engine) -> None:
    source = engine.source
    release = threading.Event()
    started = threading.Event()

    def slow(stage: StageExecution) -> object:
        from stabilize import TaskResult

        started.set()
        release.wait(30)
        return TaskResult.success()

    assert engine.processor.task_registry is not None
    engine.processor.task_registry.register("slow", slow)
    wf = Workflow.create(
        application="q",
        name="slow",
        stages=[
            StageExecution(
                ref_id="s",
                type="slow",
                tasks=[TaskExecution.create("s", "slow", stage_start=True, stage_end=True)],
            )
        ],
    )
    engine.start(wf)
    try:
        assert started.wait(30)
        stats = source.queue_stats(time.time())
        assert stats.leased == 1
        assert list(stats.leases_by_owner.values()) == [1]
        assert stats.dead_letters == 0
        assert stats.depth == stats.ready + stats.delayed + 1
    finally:
        release.set()
    wait_for(lambda: engine.status(wf.id) == "SUCCEEDED", "the slow task to finish")
    assert source.queue_stats(time.time()).leased == 0


def test_marker_changes_with_each_commit_and_not_otherwise(engine: Engine) -> None:
    source = engine.source
    first = source.marker()
    assert source.marker() == first
    wf = engine.start(plain_workflow())
    wait_for(lambda: engine.status(wf.id) == "SUCCEEDED", "the workflow to finish")
    assert source.marker() != first


def test_watch_wakes_on_commits(engine: Engine) -> None:
    woken = threading.Event()
    stop = engine.source.watch(woken.set)
    try:
        woken.clear()
        engine.start(plain_workflow())
        assert woken.wait(30), "no wake-up after a commit"
    finally:
        stop()


def test_state_at_replays_the_log(engine: Engine) -> None:
    gated, _, _ = run_some(engine)
    events = engine.source.events(gated.id)
    assert events[0].event_type == "workflow.created"
    first = engine.source.state_at(gated.id, events[0].sequence)
    assert [s.status.value for s in first.stages] == ["NOT_STARTED"] * 3
    now = engine.source.state_at(gated.id, events[-1].sequence)
    assert now.stage_by_ref_id("approve").status.value == "SUSPENDED"


def test_approve_through_the_source_finishes_the_workflow(engine: Engine) -> None:
    gated, _, _ = run_some(engine)
    engine.source.approve(gated.id, "approve", "alice", "looks right")
    wait_for(lambda: engine.status(gated.id) == "SUCCEEDED", "the approved workflow to finish")
    outputs = engine.source.workflow(gated.id).stage_by_ref_id("approve").outputs
    assert outputs["approved_by"] == "alice"
    assert outputs["approval"] == {"note": "looks right"}


def test_approving_a_finished_stage_is_refused(engine: Engine) -> None:
    from stabilize import SignalError

    gated, report, _ = run_some(engine)
    with pytest.raises(SignalError, match="'fetch'"):
        engine.source.approve(gated.id, "fetch", "mallory", "")
    assert engine.stage_status(gated.id, "approve") == "SUSPENDED"
    assert engine.status(report.id) == "SUCCEEDED"


def test_summary_text_lists_statuses_queue_and_workflows(engine: Engine) -> None:
    gated, report, other = run_some(engine)
    text = summary_text(engine.source, Filters(), time.time())
    assert "workflows: 3" in text
    assert "  RUNNING" in text
    assert "  SUCCEEDED" in text
    assert "queue: " in text
    assert "dead letters" in text
    for wf in (gated, report, other):
        assert wf.id in text


def test_summarize_refuses_a_negative_page(engine: Engine) -> None:
    with pytest.raises(ValueError, match="limit and offset must not be negative"):
        overview.summarize_workflows(engine.source.store, limit=-1)
