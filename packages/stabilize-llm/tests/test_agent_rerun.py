"""An agent stage run again starts a fresh conversation; the worker's key stays home."""

from __future__ import annotations

from typing import Any

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
from stabilize.llm import AgentLoopTask, ScriptedModel, ToolCall, ToolRegistry, tool
from stabilize.llm._stage import client_for
from stabilize.tasks import ContextReader


def test_a_jump_back_to_an_agent_stage_starts_a_new_conversation(sqlite_url):
    keys: list[str] = []

    @tool
    def ping(idempotency_key: str) -> str:
        """Ping."""
        keys.append(idempotency_key)
        return "pong"

    # The script answers by the conversation's length: a fresh conversation starts over.
    replies: list[Any] = [ToolCall("ping", {}), "done", "carried on an old conversation"]
    agent = AgentLoopTask(client=ScriptedModel(replies).client(), tools=ToolRegistry().add(ping))

    passes: list[str] = []

    def again(stage: StageExecution) -> TaskResult:
        passes.append(stage.id)
        if len(passes) > 1:
            return TaskResult.success()
        return TaskResult.jump_to("ag")

    registry = TaskRegistry()
    registry.register("agent", agent)
    registry.register("again", again)
    stages = [
        StageExecution(
            ref_id="ag",
            type="agent",
            name="ag",
            context={"prompt": "Ping."},
            tasks=[TaskExecution.create("ag", "agent")],
        ),
        StageExecution(
            ref_id="loop",
            type="again",
            name="loop",
            requisite_stage_ref_ids={"ag"},
            tasks=[TaskExecution.create("loop", "again")],
        ),
    ]
    wf = Workflow.create(application="test", name="rerun", stages=stages)
    store = SqliteWorkflowStore(sqlite_url)
    queue = SqliteQueue(sqlite_url)
    processor = QueueProcessor(queue, store=store, task_registry=registry)
    Orchestrator(queue, store=store).start(wf)
    processor.process_all(timeout=30)

    done = store.retrieve(wf.id)
    assert done.status is WorkflowStatus.SUCCEEDED
    agent_stage = done.stage_by_ref_id("ag")
    assert agent_stage.outputs["answer"] == "done"
    # The second run asked the model afresh, called the tool again, under a new key.
    assert len(keys) == 2
    assert len(set(keys)) == 2
    state = agent_stage.tasks[0].state
    assert "_agent" not in agent_stage.context
    assert [m["role"] for m in state["messages"]].count("user") == 1
    assert state["kept"] == {"step": state["step"]}  # what the next run would go on from


# -- the worker's key goes only to the worker's endpoint (docs/security.md) ------------------


def _client(context: dict[str, Any]) -> Any:
    return client_for(ContextReader(context, "llm"), None)


def test_a_base_url_from_the_context_gets_no_key_of_the_worker(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-worker")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    client = _client({"model": "m", "base_url": "http://attacker.invalid/v1"})
    assert "authorization" not in client._http.headers
    client.close()


def test_the_worker_key_still_goes_to_the_worker_endpoint(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-worker")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    for context in ({"model": "m"}, {"model": "m", "base_url": "http://127.0.0.1:9/v1/"}):
        client = _client(context)
        assert client._http.headers["authorization"] == "Bearer sk-worker"
        client.close()
