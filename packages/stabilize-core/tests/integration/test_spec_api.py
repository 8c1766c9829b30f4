"""The shape of the spec's "Simple: a single model call" example, with a function task."""

from __future__ import annotations

import importlib

import pytest

from stabilize import (
    Orchestrator,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize.queue.processor.config import QueueProcessorConfig


def answer(stage: StageExecution) -> TaskResult:
    """Stands in for LLMTask: reads the prompt, writes a completion."""
    return TaskResult.success(outputs={"completion": f"echo: {stage.context['prompt']}"})


def test_simple_single_call_example_runs_as_written(db_url):
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()

    registry = TaskRegistry()
    registry.register("llm", answer)

    workflow = Workflow.create(
        application="demo",
        name="One-shot answer",
        stages=[
            StageExecution(
                ref_id="answer",
                type="llm",
                name="Answer",
                context={"prompt": "In one sentence, what is a token bucket rate limiter?"},
                tasks=[
                    TaskExecution.create(
                        name="answer",
                        implementing_class="llm",
                        stage_start=True,
                        stage_end=True,
                    )
                ],
            ),
        ],
    )

    processor = QueueProcessor(queue, store=store, task_registry=registry)
    orchestrator = Orchestrator(queue, store=store)

    try:
        store.store(workflow)
        orchestrator.start(workflow)
        processor.process_all(timeout=60)

        result = store.retrieve(workflow.id)
    finally:
        processor.stop()

    assert result.status is WorkflowStatus.SUCCEEDED
    assert result.stages[0].outputs["completion"] == (
        "echo: In one sentence, what is a token bucket rate limiter?"
    )
    assert result.stages[0].status is WorkflowStatus.SUCCEEDED
    assert queue.size() == 0


def test_durability_example_config_shape(db_url, poll):
    """The spec's durability snippet: recover_on_start and a background processor."""
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    registry = TaskRegistry()
    registry.register("llm", answer)

    config = QueueProcessorConfig(recover_on_start=True)
    processor = QueueProcessor(queue, config=config, store=store, task_registry=registry)
    workflow = Workflow.create(
        application="demo",
        name="background",
        stages=[
            StageExecution(
                ref_id="answer",
                type="llm",
                name="Answer",
                context={"prompt": "hi"},
                tasks=[TaskExecution.create(name="answer", implementing_class="llm")],
            )
        ],
    )
    Orchestrator(queue, store=store).start(workflow)
    processor.start()
    try:
        poll(lambda: store.retrieve(workflow.id).status.is_complete, "the workflow to finish")
    finally:
        assert processor.stop(timeout=10) == 0

    assert store.retrieve(workflow.id).stages[0].outputs == {"completion": "echo: hi"}


SPEC_CORE_NAMES = [
    "Workflow",
    "StageExecution",
    "TaskExecution",
    "TaskRegistry",
    "SqliteWorkflowStore",
    "SqliteQueue",
    "QueueProcessor",
    "Orchestrator",
    "WorkflowStatus",
    "Task",
    "TaskResult",
    "TransientError",
    "emit_progress",
]


@pytest.mark.parametrize("name", SPEC_CORE_NAMES)
def test_names_the_spec_imports_from_stabilize_exist(name):
    stabilize = importlib.import_module("stabilize")

    assert getattr(stabilize, name) is not None


def test_event_sourcing_names_the_spec_imports_exist():
    events = importlib.import_module("stabilize.events")

    assert callable(events.configure_event_sourcing)
    assert callable(events.SqliteEventStore)
