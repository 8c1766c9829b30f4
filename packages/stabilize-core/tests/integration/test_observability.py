"""Traces, metrics and structured logs of real runs (OpenTelemetry's in-memory exporters)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stabilize import (
    StageExecution,
    TaskExecution,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
    configure_logging,
    configure_tracing,
    get_logger,
)
from stabilize.engine.messages import Message
from stabilize.queue.processor.config import QueueProcessorConfig
from stabilize.tracing import disable_tracing, entity_span_id, workflow_trace_id

S = WorkflowStatus
MakeEngine = Any  # the make_engine fixture (integration/conftest.py)


@pytest.fixture
def telemetry() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    configure_tracing(spans, meter_provider=MeterProvider(metric_readers=[reader]))
    yield spans, reader
    disable_tracing()


def diamond() -> Workflow:
    def stage(ref: str, after: set[str], task: str = "ok") -> StageExecution:
        return StageExecution(
            ref_id=ref,
            name=ref,
            requisite_stage_ref_ids=after,
            tasks=[TaskExecution.create(f"{ref}-task", task)],
        )

    return Workflow.create(
        application="obs",
        name="diamond",
        stages=[
            stage("a", set()),
            stage("b", {"a"}, "flaky"),
            stage("c", {"a"}),
            stage("d", {"b", "c"}),
        ],
    )


def fast() -> QueueProcessorConfig:
    return QueueProcessorConfig(
        poll_frequency_ms=10, transient_backoff_base_seconds=0.01, transient_jitter=0.0
    )


def register(engine: Any) -> None:
    attempts: list[int] = []

    def flaky(stage: StageExecution) -> TaskResult:
        attempts.append(1)
        if len(attempts) == 1:
            raise TransientError("try again")
        return TaskResult.success({"attempts": len(attempts)})

    engine.registry.register("ok", lambda stage: TaskResult.success({"ref": stage.ref_id}))
    engine.registry.register("flaky", flaky)


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def test_a_multi_stage_run_makes_one_linked_trace_and_metrics(
    make_engine: MakeEngine, telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    spans, reader = telemetry
    engine = make_engine(config=fast())
    register(engine)
    wf = engine.run(diamond())
    assert wf.status is S.SUCCEEDED

    finished = spans.get_finished_spans()
    trace_id = workflow_trace_id(wf.id)
    mine = [s for s in finished if s.context.trace_id == trace_id]
    by_name: dict[str, list[Any]] = {}
    for span in mine:
        by_name.setdefault(span.name, []).append(span)

    (root,) = by_name["workflow diamond"]
    assert root.context.span_id == entity_span_id(wf.id)
    assert root.parent is None
    assert root.attributes["stabilize.status"] == "SUCCEEDED"
    for stage in wf.stages:
        (span,) = by_name[f"stage {stage.ref_id}"]
        assert span.context.span_id == entity_span_id(stage.id)
        assert span.parent.span_id == entity_span_id(wf.id)
        runs = by_name[f"task {stage.ref_id}-task"]
        assert all(r.parent.span_id == entity_span_id(stage.id) for r in runs)
        assert all(r.attributes["stabilize.workflow_id"] == wf.id for r in runs)
    flaky_runs = by_name["task b-task"]
    assert sorted(r.attributes["stabilize.status"] for r in flaky_runs) == ["ERROR", "SUCCEEDED"]

    commits = [s for s in finished if s.name == "stabilize.commit"]
    assert commits
    linked = {link.context.trace_id for c in commits for link in c.links}
    assert trace_id in linked

    points = metric_points(reader)
    assert sum(p.count for p in points["stabilize.task.duration"]) == 5  # 4 tasks, 1 retry
    assert sum(p.count for p in points["stabilize.claim_to_start"]) == 5
    assert sum(p.value for p in points["stabilize.task.retries"]) == 1
    depth = points["stabilize.queue.depth"]
    assert depth
    assert all(p.value == 0 for p in depth)


def test_two_processors_record_one_tree_for_a_workflow(
    make_engine: MakeEngine, databases: Any
) -> None:
    # Two workers with their own providers (as two processes would have) and nothing in
    # common but the database: their spans of one workflow join in one trace.
    first_spans, second_spans = InMemorySpanExporter(), InMemorySpanExporter()
    engine = make_engine(config=fast())
    register(engine)
    wf = diamond()
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    try:
        configure_tracing(first_spans)
        engine.processor.process_one()  # starts the workflow and runs "a"
        engine.processor.process_all(timeout=0.5)
        configure_tracing(second_spans)
        other = make_engine(config=fast(), registry=engine.registry)
        other.processor.process_all(timeout=30)
    finally:
        disable_tracing()
    done = engine.store.retrieve(wf.id)
    assert done.status is S.SUCCEEDED
    spans = [*first_spans.get_finished_spans(), *second_spans.get_finished_spans()]
    mine = [s for s in spans if s.context.trace_id == workflow_trace_id(wf.id)]
    ids = {s.context.span_id for s in mine}
    # Every parent named by a span of this workflow is a span some worker recorded.
    assert all(s.parent is None or s.parent.span_id in ids for s in mine)
    assert first_spans.get_finished_spans()


def test_dead_letters_are_counted(
    make_engine: MakeEngine, telemetry: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    _, reader = telemetry
    engine = make_engine(config=fast())
    register(engine)
    wf = engine.run(diamond())
    with engine.backend.transaction() as tx:
        tx.enqueue([Message("NoSuchKind", wf.id)], 0)
    engine.processor.process_all(timeout=10)
    assert engine.count("dead_letters") == 1
    points = metric_points(reader)
    assert [p.value for p in points["stabilize.dead_letters"]] == [1]


def test_configure_logging_writes_json_with_the_task_ids_bound(make_engine: MakeEngine) -> None:
    out = io.StringIO()
    handler = configure_logging("INFO", stream=out, logger="obs-test")
    try:
        log = get_logger("obs-test")

        def logs(stage: StageExecution) -> TaskResult:
            log.info("working", extra={"step": 1})
            return TaskResult.success()

        engine = make_engine()
        engine.registry.register("ok", logs)
        engine.registry.register("flaky", logs)
        wf = engine.run(diamond())
        log.info("outside")
    finally:
        logging.getLogger("obs-test").removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    inside = [entry for entry in lines if entry["message"] == "working"]
    assert len(inside) == 4
    stages = {s.id: s for s in wf.stages}
    for entry in inside:
        assert entry["workflow_id"] == wf.id
        assert entry["step"] == 1
        assert entry["logger"] == "obs-test"
        stage = stages[entry["stage_id"]]
        assert entry["stage_ref"] == stage.ref_id
        assert entry["task_id"] == stage.tasks[0].id
        assert entry["task_name"] == f"{stage.ref_id}-task"
    (outside,) = [entry for entry in lines if entry["message"] == "outside"]
    assert "workflow_id" not in outside


def test_configure_tracing_without_opentelemetry_names_the_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import stabilize\n"
        "try:\n    stabilize.configure_tracing()\n"
        "except ModuleNotFoundError as e:\n    print(e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=50
    )
    assert 'pip install "stabilize-core[observability]"' in proc.stdout


class BrokenTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("collector down")


class BrokenProvider:
    def get_tracer(self, *args: Any, **kwargs: Any) -> BrokenTracer:
        return BrokenTracer()


def test_a_failing_tracer_never_stops_the_engine(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    configure_tracing(tracer_provider=BrokenProvider())  # type: ignore[arg-type]
    try:
        engine = make_engine(config=fast())
        register(engine)
        assert engine.run(diamond()).status is S.SUCCEEDED
    finally:
        disable_tracing()
    assert "telemetry hook" in caplog.text
    assert "collector down" in caplog.text
