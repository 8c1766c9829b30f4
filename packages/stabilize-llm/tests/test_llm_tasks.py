"""LLMTask and AgentLoopTask in real workflows on SQLite files, and the spec's examples."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import stabilize
from stabilize import (
    Orchestrator,
    QueueProcessor,
    QueueProcessorConfig,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    Task,
    TaskExecution,
    TaskRegistry,
    Workflow,
    WorkflowStatus,
)
from stabilize.events import Event, get_event_bus
from stabilize.hitl import send_signal
from stabilize.llm import (
    AgentLoopTask,
    LLMClient,
    LLMTask,
    Reply,
    ScriptedModel,
    ToolCall,
    ToolRegistry,
    tool,
)

S = WorkflowStatus


@dataclass
class Engine:
    store: SqliteWorkflowStore
    queue: SqliteQueue
    processor: QueueProcessor
    orchestrator: Orchestrator

    def run(self, workflow: Workflow, timeout: float = 30) -> Workflow:
        self.store.store(workflow)
        self.orchestrator.start(workflow)
        self.processor.process_all(timeout=timeout)
        return self.store.retrieve(workflow.id)

    def resume(self, workflow: Workflow, timeout: float = 30) -> Workflow:
        self.processor.process_all(timeout=timeout)
        return self.store.retrieve(workflow.id)


def make_engine(url: str, tasks: dict[str, Task]) -> Engine:
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()
    registry = TaskRegistry()
    for name, task in tasks.items():
        registry.register(name, task)
    config = QueueProcessorConfig(transient_backoff_base_seconds=0.0, transient_jitter=0.0)
    processor = QueueProcessor(queue, config=config, store=store, task_registry=registry)
    return Engine(store, queue, processor, Orchestrator(queue, store=store))


def stage(
    ref: str, kind: str, requisites: set[str] | None = None, **context: Any
) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=kind,
        name=ref,
        context=context,
        requisite_stage_ref_ids=requisites or set(),
        tasks=[TaskExecution.create(ref, kind, stage_start=True, stage_end=True)],
    )


def flow(*stages: StageExecution, **context: Any) -> Workflow:
    return Workflow.create(application="test", name="llm", stages=list(stages), context=context)


def by_ref(wf: Workflow, ref: str) -> StageExecution:
    return next(s for s in wf.stages if s.ref_id == ref)


# -- the spec's examples, verbatim but for the base URL -----------------------------------


def test_spec_single_model_call(
    model_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    model_server.script(
        ["A token bucket refills tokens at a fixed rate and spends one per request."]
    )
    base_url = model_server.url

    from stabilize import (
        Orchestrator,
        QueueProcessor,
        SqliteQueue,
        SqliteWorkflowStore,
        StageExecution,
        TaskExecution,
        TaskRegistry,
        Workflow,
    )
    from stabilize.llm import LLMClient, LLMTask

    client = LLMClient(model="glm-5.2", base_url=base_url, api="ollama")

    store = SqliteWorkflowStore("sqlite:///agent.db", create_tables=True)
    queue = SqliteQueue("sqlite:///agent.db")
    queue._create_table()

    registry = TaskRegistry()
    registry.register("llm", LLMTask(client=client))

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

    store.store(workflow)
    orchestrator.start(workflow)
    processor.process_all(timeout=60)

    result = store.retrieve(workflow.id)
    print(result.stages[0].outputs["completion"])

    client.close()
    assert capsys.readouterr().out == (
        "A token bucket refills tokens at a fixed rate and spends one per request.\n"
    )
    (req,) = model_server.requests
    assert req.api == "ollama"
    assert req.body["model"] == "glm-5.2"
    assert req.body["messages"] == [
        {"role": "user", "content": "In one sentence, what is a token bucket rate limiter?"}
    ]


def lookup_balance(user_id: str) -> str:
    return f"{user_id}: 1,234.56 EUR"


def test_spec_agent_with_human_approval(
    model_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model_server.script(
        [
            {"tool_calls": [("account_balance", {"user_id": "u_42"})]},
            "User u_42 has a balance of 1,234.56 EUR.",
        ]
    )
    base_url = model_server.url

    from stabilize import (
        ApprovalTask,
        Orchestrator,
        QueueProcessor,
        SqliteQueue,
        SqliteWorkflowStore,
        StageExecution,
        TaskExecution,
        TaskRegistry,
        Workflow,
        WorkflowStatus,
        approve,
    )
    from stabilize.llm import AgentLoopTask, LLMClient, ToolRegistry, tool

    @tool
    def account_balance(user_id: str) -> str:
        """Return the current balance for a user id."""
        return lookup_balance(user_id)

    client = LLMClient(model="glm-5.2", base_url=base_url, api="ollama")
    tools = ToolRegistry().add(account_balance)

    store = SqliteWorkflowStore("sqlite:///agent.db", create_tables=True)
    queue = SqliteQueue("sqlite:///agent.db")
    queue._create_table()

    registry = TaskRegistry()
    registry.register("agent", AgentLoopTask(client=client, tools=tools))
    registry.register("approval", ApprovalTask)

    workflow = Workflow.create(
        application="demo",
        name="Agent with approval",
        stages=[
            StageExecution(
                ref_id="agent",
                type="agent",
                name="Look up balance",
                context={"prompt": "What is user u_42's balance? Use the tool, then state it."},
                tasks=[
                    TaskExecution.create(
                        name="a", implementing_class="agent", stage_start=True, stage_end=True
                    )
                ],
            ),
            StageExecution(
                ref_id="approve",
                type="approval",
                name="Human sign-off",
                requisite_stage_ref_ids={"agent"},
                tasks=[
                    TaskExecution.create(
                        name="ap", implementing_class="approval", stage_start=True, stage_end=True
                    )
                ],
            ),
        ],
    )

    processor = QueueProcessor(queue, store=store, task_registry=registry)
    orchestrator = Orchestrator(queue, store=store)

    store.store(workflow)
    orchestrator.start(workflow)

    # Run until the approval gate suspends.
    processor.process_all(timeout=90)

    gate = next(s for s in store.retrieve(workflow.id).stages if s.ref_id == "approve")
    assert gate.status == WorkflowStatus.SUSPENDED

    # ... later, when a human decides ...
    approve(queue, workflow.id, gate.id, {"user": "alice"})
    processor.process_all(timeout=30)  # resumes and finishes

    client.close()
    done = store.retrieve(workflow.id)
    assert done.status is S.SUCCEEDED
    agent = by_ref(done, "agent")
    assert agent.outputs["answer"] == "User u_42 has a balance of 1,234.56 EUR."
    (invocation,) = agent.outputs["tool_invocations"]
    assert invocation["tool"] == "account_balance"
    assert invocation["arguments"] == {"user_id": "u_42"}
    assert invocation["result"] == "u_42: 1,234.56 EUR"
    assert invocation["idempotency_key"] == f"{workflow.id}:{agent.id}:2"
    assert by_ref(done, "approve").outputs["approved_by"] == "alice"
    # The tool result went back to the model, which then answered.
    assert model_server.requests[1].body["messages"][-1]["content"] == "u_42: 1,234.56 EUR"


# -- LLMTask -------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_llm_task_keys_and_usage(model_server: Any, sqlite_url: str, api: str) -> None:
    model_server.script([{"content": "Bonjour", "prompt_tokens": 12, "completion_tokens": 2}])
    base = model_server.openai_url if api == "openai" else model_server.url
    client = LLMClient("m1", base_url=base, api=api)
    engine = make_engine(sqlite_url, {"llm": LLMTask(client=client)})
    wf = engine.run(
        flow(
            stage(
                "t",
                "llm",
                messages=[{"role": "user", "content": "Say hello in French."}],
                system="You translate.",
                temperature=0.1,
                options={"seed": 7},
                model="m2",
                output_key="french",
            )
        )
    )
    client.close()
    assert wf.status is S.SUCCEEDED
    out = by_ref(wf, "t").outputs
    assert out["french"] == "Bonjour"
    assert out["llm_usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 2,
        "total_tokens": 14,
        "calls": 1,
    }
    assert out["llm_workflow_usage"]["total_tokens"] == 14
    assert "llm_raw" in out
    body = model_server.requests[0].body
    assert body["model"] == "m2"
    assert body["messages"][0] == {"role": "system", "content": "You translate."}
    seed = body["seed"] if api == "openai" else body["options"]["seed"]
    assert seed == 7


def test_llm_task_builds_client_from_context_without_keys_in_state(
    model_server: Any, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    # The key goes to the worker's own endpoint only (test_agent_rerun.py: not elsewhere).
    monkeypatch.setenv("OPENAI_BASE_URL", model_server.openai_url)
    model_server.script(["fine"])
    engine = make_engine(sqlite_url, {"llm": LLMTask()})
    wf = engine.run(
        flow(stage("t", "llm", prompt="hi", model="m", base_url=model_server.openai_url))
    )
    assert by_ref(wf, "t").outputs["completion"] == "fine"
    assert model_server.requests[0].headers["Authorization"] == "Bearer sk-from-env"
    assert "sk-from-env" not in str(engine.store.retrieve(wf.id).to_dict())

    refused = engine.run(flow(stage("t", "llm", prompt="hi", model="m", api_key="sk-inline")))
    assert refused.status is S.TERMINAL
    details = by_ref(refused, "t").tasks[0].task_exception_details or {}
    assert "keys must not be stored with the workflow" in details["message"]


def test_llm_task_streams_tokens_to_listeners(sqlite_url: str) -> None:
    model = ScriptedModel(["one two three four"])
    engine = make_engine(sqlite_url, {"llm": LLMTask(client=model.client(api="ollama"))})
    tokens: list[str] = []
    lock = threading.Lock()

    def listen(event: Event) -> None:
        if event.event_type == "custom.progress" and "token" in event.data:
            with lock:
                tokens.append(event.data["token"])

    unsubscribe = get_event_bus().subscribe(listen)
    try:
        wf = engine.run(flow(stage("t", "llm", prompt="count", stream=True)))
    finally:
        unsubscribe()
    assert by_ref(wf, "t").outputs["completion"] == "one two three four"
    assert tokens == ["one ", "two ", "three ", "four"]
    assert model.requests[0]["stream"] is True


def test_llm_task_errors_map_to_retry_and_failure(sqlite_url: str) -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "busy"}),
        httpx.Response(503, text="overloaded"),
        httpx.Response(200, json={"message": {"content": "ok"}, "done": True}),
        httpx.Response(400, json={"error": "invalid 'options.num_ctx'"}),
    ]
    handler: Callable[[httpx.Request], httpx.Response] = lambda request: answers.pop(0)  # noqa: E731
    client = LLMClient("m", api="ollama", transport=httpx.MockTransport(handler))
    engine = make_engine(sqlite_url, {"llm": LLMTask(client=client)})
    ok = engine.run(flow(stage("t", "llm", prompt="hi")))
    assert ok.status is S.SUCCEEDED
    assert by_ref(ok, "t").tasks[0].retry_count == 2
    failed = engine.run(flow(stage("t", "llm", prompt="hi")))
    assert failed.status is S.TERMINAL
    details = by_ref(failed, "t").tasks[0].task_exception_details or {}
    assert details["exception_type"] == "LLMError"
    assert "HTTP 400: invalid 'options.num_ctx'" in details["message"]


def test_llm_task_missing_prompt_is_a_config_error(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, {"llm": LLMTask(client=ScriptedModel(["x"]).client())})
    wf = engine.run(flow(stage("t", "llm")))
    details = by_ref(wf, "t").tasks[0].task_exception_details or {}
    assert "LLMTask: context key 'prompt' is required" in details["message"]


def test_workflow_usage_is_summed_across_stages(sqlite_url: str) -> None:
    model = ScriptedModel(["alpha beta", "gamma", "delta epsilon zeta"])
    client = model.client()
    agent = AgentLoopTask(client=ScriptedModel(["done"]).client())
    engine = make_engine(sqlite_url, {"llm": LLMTask(client=client), "agent": agent})
    wf = engine.run(
        flow(
            stage("a", "llm", prompt="one"),
            stage("b", "llm", {"a"}, prompt="one two"),
            stage("c", "agent", {"b"}, prompt="one two three"),
        )
    )
    a, b, c = (by_ref(wf, r).outputs for r in "abc")
    # Word counts: prompt words in, answer words out (the scripted model's usage).
    assert a["llm_usage"]["total_tokens"] == 1 + 2
    assert b["llm_usage"]["total_tokens"] == 2 + 2
    assert c["llm_usage"]["total_tokens"] == 3 + 1
    assert c["llm_workflow_usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": 5,
        "total_tokens": 11,
        "calls": 3,
    }


# -- AgentLoopTask -------------------------------------------------------------------------


def test_agent_loop_tools_errors_and_invocations(sqlite_url: str) -> None:
    sent: list[tuple[str, str | None]] = []

    @tool
    def send_email(to: str, body: str, idempotency_key: str | None = None) -> str:
        """Send an email.

        Args:
            to: The recipient.
            body: The text.
        """
        sent.append((to, idempotency_key))
        return "sent"

    @tool
    def explode() -> str:
        """Fail."""
        raise RuntimeError("kaboom")

    model = ScriptedModel(
        [
            [ToolCall("send_email", {"to": "a@x"}), ToolCall("explode", {})],
            Reply("retrying", [ToolCall("send_email", {"to": "a@x", "body": "hi"})]),
            ToolCall("no_such_tool", {}),
            "All done.",
        ]
    )
    tools = ToolRegistry().add(send_email).add(explode)
    engine = make_engine(sqlite_url, {"agent": AgentLoopTask(client=model.client(), tools=tools)})
    wf = engine.run(flow(stage("ag", "agent", prompt="Email a@x.", system="Be helpful.")))
    assert wf.status is S.SUCCEEDED
    st = by_ref(wf, "ag")
    out = st.outputs
    assert out["answer"] == "All done."
    assert out["iterations"] == 4
    key = f"{wf.id}:{st.id}:"
    got = [
        (i["tool"], i["step"], i["idempotency_key"], i["status"], i["result"])
        for i in out["tool_invocations"]
    ]
    assert got == [
        (
            "send_email",
            2,
            key + "2",
            "error",
            "ERROR: invalid arguments for tool 'send_email': body: Field required",
        ),
        ("explode", 3, key + "3", "error", "ERROR: RuntimeError: kaboom"),
        ("send_email", 5, key + "5", "done", "sent"),
        (
            "no_such_tool",
            7,
            key + "7",
            "error",
            "ERROR: unknown tool 'no_such_tool' (available: send_email, explode)",
        ),
    ]
    assert sent == [("a@x", key + "5")]
    assert out["usage"]["calls"] == 4
    # The model saw each result, answering the right call.
    last = model.requests[-1]["messages"]
    assert last[0] == {"role": "system", "content": "Be helpful."}
    tool_msgs = [m for m in last if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["call_0", "call_1", "call_0", "call_0"]
    assert tool_msgs[2]["content"] == "sent"
    # One step per execution: every step was its own committed checkpoint.
    assert st.tasks[0].retry_count == 0


def test_agent_max_iterations_fails_continue(sqlite_url: str) -> None:
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    model = ScriptedModel([ToolCall("ping", {})] * 5)
    agent = AgentLoopTask(client=model.client(), tools=ToolRegistry().add(ping))
    engine = make_engine(sqlite_url, {"agent": agent, "llm": LLMTask(client=model.client())})
    wf = engine.run(flow(stage("ag", "agent", prompt="loop", max_iterations=3)))
    st = by_ref(wf, "ag")
    assert st.status is S.FAILED_CONTINUE
    assert wf.status is S.SUCCEEDED
    assert st.outputs["iterations"] == 3
    assert len(st.outputs["tool_invocations"]) == 3
    assert st.outputs["answer"] is None
    assert "reached max_iterations (3)" in str(st.tasks[0].task_exception_details)
    assert len(model.requests) == 3


def test_agent_state_is_checkpointed_between_steps(sqlite_url: str) -> None:
    """Stop the processor after each commit and look at the durable state."""
    calls: list[str] = []

    @tool
    def step_tool(n: int) -> str:
        """Record."""
        calls.append(f"tool {n}")
        return f"did {n}"

    model = ScriptedModel([ToolCall("step_tool", {"n": 1}), "finished"])
    agent = AgentLoopTask(client=model.client(), tools=ToolRegistry().add(step_tool))
    engine = make_engine(sqlite_url, {"agent": agent})
    wf = flow(stage("ag", "agent", prompt="go"))
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    seen: list[tuple[int, list[Any]]] = []
    while not engine.store.retrieve(wf.id).status.is_complete:
        engine.processor.process_one()
        state = by_ref(engine.store.retrieve(wf.id), "ag").tasks[0].state or None
        if state is not None:
            snapshot = (state["step"], [i["status"] for i in state["invocations"]])
            if not seen or seen[-1] != snapshot:
                seen.append(snapshot)
    assert seen == [(2, ["pending"]), (2, ["done"]), (3, ["done"])]
    assert calls == ["tool 1"]
    assert len(model.requests) == 2


# -- budgets --------------------------------------------------------------------------------


def test_budget_suspends_then_raise_continues(model_server: Any, sqlite_url: str) -> None:
    model_server.responder = lambda r: {
        "content": "ok",
        "prompt_tokens": 20,
        "completion_tokens": 5,
    }
    client = LLMClient("m", base_url=model_server.url, api="ollama")
    engine = make_engine(sqlite_url, {"llm": LLMTask(client=client)})
    wf = flow(
        stage("a", "llm", prompt="short"),
        stage("b", "llm", {"a"}, prompt="x" * 40),  # about 10 tokens: 25 + 10 > 30
        stage("c", "llm", {"b"}, prompt="y"),
        llm_token_budget=30,
    )
    got = engine.run(wf)
    b = by_ref(got, "b")
    assert b.status is S.SUSPENDED
    assert got.status is S.RUNNING
    waiting = b.context["llm_budget_exceeded"]
    assert (waiting["limit"], waiting["spent"], waiting["estimated_next_call"]) == (30, 25, 10)
    assert "send 'raise_budget'" in waiting["reason"]
    assert len(model_server.requests) == 1

    send_signal(engine.queue, wf.id, b.id, "raise_budget", {"tokens": 100}, user="bob")
    done = engine.resume(wf)
    client.close()
    assert done.status is S.SUCCEEDED
    b = by_ref(done, "b")
    assert b.context["llm_budget_raises"] == [{"from": 30, "to": 130, "by": "bob"}]
    assert b.outputs["llm_token_budget"] == 130  # later stages inherit the raised limit
    assert by_ref(done, "c").outputs["llm_workflow_usage"]["total_tokens"] == 75
    assert len(model_server.requests) == 3


def test_budget_stop_ends_terminal(sqlite_url: str) -> None:
    model = ScriptedModel(["a b c d e f g h"])
    engine = make_engine(sqlite_url, {"llm": LLMTask(client=model.client())})
    wf = flow(stage("a", "llm", prompt="p" * 80, llm_token_budget=5))
    suspended = engine.run(wf)
    a = by_ref(suspended, "a")
    assert a.status is S.SUSPENDED
    stabilize.Orchestrator(engine.queue, store=engine.store).signal(
        wf.id, "a", "raise_budget", {"tokens": "lots"}
    )
    still = engine.resume(wf)
    assert by_ref(still, "a").status is S.SUSPENDED
    assert "needs data {'tokens': N}" in by_ref(still, "a").context["llm_budget_exceeded"]["error"]
    send_signal(engine.queue, wf.id, a.id, "stop", user="carol")
    done = engine.resume(wf)
    assert done.status is S.TERMINAL
    error = str(by_ref(done, "a").tasks[0].task_exception_details)
    assert "stage 'a' stopped by carol: the token budget of 5 tokens would be exceeded" in error
    assert model.requests == []


def test_agent_budget_suspends_mid_loop_without_repeating(
    model_server: Any, sqlite_url: str
) -> None:
    @tool
    def lookup(q: str) -> str:
        """Look up."""
        return "found " + q

    model_server.script(
        [
            {"tool_calls": [("lookup", {"q": "x"})], "prompt_tokens": 100, "completion_tokens": 10},
            {"content": "answer", "prompt_tokens": 120, "completion_tokens": 5},
        ]
    )
    client = LLMClient("m", base_url=model_server.openai_url)
    agent = AgentLoopTask(client=client, tools=ToolRegistry().add(lookup))
    engine = make_engine(sqlite_url, {"agent": agent})
    wf = flow(stage("ag", "agent", prompt="find x", llm_token_budget=150))
    got = engine.run(wf)
    st = by_ref(got, "ag")
    assert st.status is S.SUSPENDED
    assert st.tasks[0].state["invocations"][0]["status"] == "done"
    assert "_agent" not in st.context
    assert st.context["llm_budget_exceeded"]["spent"] == 110
    send_signal(engine.queue, wf.id, st.id, "raise_budget", {"limit": 1000})
    done = engine.resume(wf)
    client.close()
    assert done.status is S.SUCCEEDED
    out = by_ref(done, "ag").outputs
    assert out["answer"] == "answer"
    assert out["usage"]["total_tokens"] == 235
    assert out["llm_token_budget"] == 1000
    assert [r.turn for r in model_server.requests] == [0, 1]


def test_exports_are_lazy_and_pinned() -> None:
    import stabilize.llm as llm

    assert sorted(llm.__all__) == [
        "AgentLoopTask",
        "ChatMessage",
        "ChatResponse",
        "LLMClient",
        "LLMError",
        "LLMTask",
        "Reply",
        "ScriptedModel",
        "Tool",
        "ToolCall",
        "ToolError",
        "ToolRegistry",
        "ToolResult",
        "Usage",
        "tool",
    ]
    from stabilize import AgentLoopTask as A
    from stabilize import LLMClient as C
    from stabilize import ToolRegistry as R
    from stabilize import tool as t

    assert (A, C, R, t) == (llm.AgentLoopTask, llm.LLMClient, llm.ToolRegistry, llm.tool)
    for name in ("llm", "chat"):
        assert isinstance(TaskRegistry().get(name), LLMTask)
    for name in ("agent", "react_agent", "agent_loop"):
        assert isinstance(TaskRegistry().get(name), AgentLoopTask)


def test_import_stabilize_loads_neither_httpx_nor_llm() -> None:
    import subprocess
    import sys

    code = (
        "import sys, stabilize; "
        "print(sorted(m for m in sys.modules if m == 'httpx' or m.startswith('stabilize.llm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
