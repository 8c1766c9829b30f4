"""A provider failing again and again fails the stage within the retry budget (issue 14)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from stabilize import (
    Orchestrator,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    Task,
    TaskExecution,
    TaskRegistry,
    Workflow,
    WorkflowStatus,
)
from stabilize.llm import AgentLoopTask, LLMClient, LLMTask

S = WorkflowStatus


def run(tmp_path: Path, task: Task, kind: str = "llm", **context: object) -> Workflow:
    url = f"sqlite:///{tmp_path / 'retry.db'}"
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()
    registry = TaskRegistry()
    registry.register(kind, task)
    processor = QueueProcessor(queue, store=store, task_registry=registry)
    wf = Workflow.create(
        application="test",
        name="retry",
        stages=[
            StageExecution(
                ref_id="t",
                type=kind,
                name="t",
                context={"prompt": "hi", **context},
                tasks=[TaskExecution.create("t", kind, stage_start=True, stage_end=True)],
            )
        ],
    )
    store.store(wf)
    Orchestrator(queue, store=store).start(wf)
    processor.process_all(timeout=60)
    return store.retrieve(wf.id)


def client(answers: list[httpx.Response], seen: list[int]) -> LLMClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    transport: Callable[[httpx.Request], httpx.Response] = handler
    return LLMClient("m", api="ollama", transport=httpx.MockTransport(transport))


def test_a_provider_answering_503_forever_fails_the_stage_with_its_status_and_message(
    tmp_path: Path,
) -> None:
    seen: list[int] = []
    answers = [httpx.Response(503, json={"error": "model overloaded"})]
    done = run(tmp_path, LLMTask(client=client(answers, seen), retry_timeout=1.0))
    assert done.status is S.TERMINAL
    details = done.stage_by_ref_id("t").tasks[0].task_exception_details or {}
    assert details["exception_type"] == "LLMError"
    assert "HTTP 503: model overloaded" in details["message"]
    assert "the retry budget is 1s" in details["message"]
    # Backoff from 0.5 s: attempts at 0, 0.5 s; the next wait (1 s) would pass the budget.
    assert len(seen) == 2


def test_the_stage_context_sets_the_budget_and_an_agent_follows_it(tmp_path: Path) -> None:
    seen: list[int] = []
    answers = [httpx.Response(500, text="boom")]
    agent = AgentLoopTask(client=client(answers, seen))
    done = run(tmp_path, agent, "agent", llm_retry_timeout_seconds=0)
    assert done.status is S.TERMINAL
    details = done.stage_by_ref_id("t").tasks[0].task_exception_details or {}
    assert "HTTP 500: boom" in details["message"]
    assert "gave up after 1 attempt in" in details["message"]
    assert len(seen) == 1


def test_failures_within_the_budget_are_retried_and_the_call_succeeds(tmp_path: Path) -> None:
    seen: list[int] = []
    answers = [
        httpx.Response(502, text="bad gateway"),
        httpx.Response(503, text="busy"),
        httpx.Response(200, json={"message": {"content": "ok"}, "done": True}),
    ]
    done = run(tmp_path, LLMTask(client=client(answers, seen), retry_timeout=30))
    assert done.status is S.SUCCEEDED
    assert done.stage_by_ref_id("t").outputs["completion"] == "ok"
    assert len(seen) == 3


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="retry_timeout must be >= 0"):
        LLMTask(retry_timeout=-1)
