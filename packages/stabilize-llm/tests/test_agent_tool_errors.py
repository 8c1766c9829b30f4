"""Which tool errors the model sees and which fail the stage (issue 15).

A bug in a tool's code (NameError, TypeError, ...) fails the agent stage with its traceback
instead of being shown to the model while the stage succeeds; a ToolError (raised on
purpose) and other exceptions still go to the model. Every tool error is logged.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize import (
    Orchestrator,
    PermanentError,
    QueueProcessor,
    QueueProcessorConfig,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TransientError,
    Workflow,
    WorkflowStatus,
)
from stabilize.llm import (
    AgentLoopTask,
    ScriptedModel,
    ToolCall,
    ToolError,
    ToolRegistry,
    ToolResult,
    tool,
)
from stabilize.llm._agent import _private_copy
from stabilize.llm._tools import PROGRAMMING_ERRORS

S = WorkflowStatus
POLICIES = ["auto", "model", "fail"]
OTHER_ERRORS: list[type[Exception]] = [KeyError, IndexError, ValueError, RuntimeError, OSError]


def raising(exc_type: type[Exception], message: str = "boom") -> ToolRegistry:
    def broken() -> str:
        """Fail."""
        raise exc_type(message)

    return ToolRegistry().add(broken)


def fails(exc_type: type[Exception], policy: str) -> bool:
    """The rule: does an exception of this type fail the stage under this policy?"""
    if issubclass(exc_type, ToolError):
        return False
    return policy == "fail" or (policy == "auto" and issubclass(exc_type, PROGRAMMING_ERRORS))


# -- dispatch ------------------------------------------------------------------------------


@pytest.mark.parametrize("exc_type", PROGRAMMING_ERRORS)
def test_a_bug_in_a_tool_raises_naming_the_tool(exc_type, caplog):
    tools = raising(exc_type, "the bug")

    with caplog.at_level(logging.INFO, logger="stabilize.llm"), pytest.raises(PermanentError) as e:
        tools.dispatch(ToolCall("broken"))

    assert f"tool 'broken' raised {exc_type.__name__}: the bug" in str(e.value)
    assert "raise ToolError" in str(e.value)
    assert isinstance(e.value.__cause__, exc_type)  # the tool's traceback is kept
    assert [r.name for r in caplog.records] == ["stabilize.llm"]
    assert "'broken'" in caplog.records[0].getMessage()


@pytest.mark.parametrize("policy", POLICIES)
def test_a_tool_error_goes_to_the_model_under_every_policy(policy, caplog):
    tools = raising(ToolError, "no account u_9; ask for another id")

    with caplog.at_level(logging.INFO, logger="stabilize.llm"):
        result = tools.dispatch(ToolCall("broken"), errors=policy)

    assert (result.content, result.is_error) == ("ERROR: no account u_9; ask for another id", True)
    assert len(caplog.records) == 1


def test_other_exceptions_go_to_the_model_unless_the_policy_is_fail(caplog):
    tools = raising(KeyError, "no such account")

    with caplog.at_level(logging.INFO, logger="stabilize.llm"):
        result = tools.dispatch(ToolCall("broken"))
    assert result.content == "ERROR: KeyError: 'no such account'"
    assert caplog.records[0].levelno == logging.WARNING

    with pytest.raises(PermanentError, match="tool 'broken' raised KeyError"):
        tools.dispatch(ToolCall("broken"), errors="fail")


def test_the_model_policy_shows_bugs_to_the_model_as_before():
    result = raising(NameError, "name 'x' is not defined").dispatch(
        ToolCall("broken"), errors="model"
    )
    assert result.content == "ERROR: NameError: name 'x' is not defined"


def test_transient_errors_propagate_under_every_policy():
    for policy in POLICIES:
        with pytest.raises(TransientError):
            raising(TransientError).dispatch(ToolCall("broken"), errors=policy)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    exc_type=st.sampled_from([*PROGRAMMING_ERRORS, *OTHER_ERRORS, ToolError]),
    policy=st.sampled_from(POLICIES),
    message=st.text(max_size=40),
    is_async=st.booleans(),
)
@example(exc_type=ModuleNotFoundError, policy="auto", message="", is_async=False)
@example(exc_type=UnboundLocalError, policy="auto", message="x", is_async=True)
def test_every_tool_exception_follows_the_policy(exc_type, policy, message, is_async):
    # Subclasses count as their base: ModuleNotFoundError is an ImportError.
    def broken() -> str:
        """Fail."""
        raise exc_type(message)

    async def abroken() -> str:
        """Fail."""
        raise exc_type(message)

    tools = ToolRegistry().add(abroken if is_async else broken, name="broken")

    def dispatch() -> ToolResult:
        call = ToolCall("broken")
        if is_async:
            return asyncio.run(tools.adispatch(call, errors=policy))
        return tools.dispatch(call, errors=policy)

    if fails(exc_type, policy):
        with pytest.raises(PermanentError, match="tool 'broken' raised") as raised:
            dispatch()
        assert isinstance(raised.value.__cause__, exc_type)
    else:
        result = dispatch()
        assert result.is_error
        assert result.content.startswith("ERROR: ")


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="tool_errors must be one of auto, model, fail"):
        AgentLoopTask(tool_errors="ignore")  # type: ignore[arg-type]


# -- the agent stage -------------------------------------------------------------------------


def run_agent(url: str, tools: ToolRegistry, replies: list[Any], **kwargs: Any) -> Workflow:
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()
    agent = AgentLoopTask(client=ScriptedModel(replies).client(), tools=tools, **kwargs)
    registry = TaskRegistry()
    registry.register("agent", agent)
    config = QueueProcessorConfig(transient_backoff_base_seconds=0.0, transient_jitter=0.0)
    processor = QueueProcessor(queue, config=config, store=store, task_registry=registry)
    stage = StageExecution(
        ref_id="ag",
        type="agent",
        name="ag",
        context={"prompt": "Look up u_1."},
        tasks=[TaskExecution.create("ag", "agent", stage_start=True, stage_end=True)],
    )
    wf = Workflow.create(application="test", name="tools", stages=[stage])
    store.store(wf)
    Orchestrator(queue, store=store).start(wf)
    processor.process_all(timeout=30)
    return store.retrieve(wf.id)


def test_a_bug_in_a_tool_fails_the_agent_stage_with_the_traceback(sqlite_url):
    calls = []

    @tool
    def lookup(user_id: str) -> str:
        """Look a user up."""
        calls.append(user_id)
        return str(undefined_name)  # type: ignore[name-defined]  # noqa: F821

    wf = run_agent(
        sqlite_url, ToolRegistry().add(lookup), [ToolCall("lookup", {"user_id": "u_1"}), "done"]
    )

    assert wf.status is S.TERMINAL
    stage = wf.stages[0]
    assert stage.status is S.TERMINAL
    assert "tool 'lookup' raised NameError: name 'undefined_name' is not defined" in str(wf.error)
    details = stage.tasks[0].task_exception_details
    assert "return str(undefined_name)" in details["traceback"]  # the tool's own line
    assert calls == ["u_1"]  # not retried
    # The checkpoint holds the call as asked for, nothing of its failed run.
    state = stage.tasks[0].state
    assert "_agent" not in stage.context
    assert [i["status"] for i in state["invocations"]] == ["pending"]
    assert [m["role"] for m in state["messages"]] == ["user", "assistant"]


def test_a_tool_error_goes_to_the_model_and_the_stage_succeeds(sqlite_url):
    @tool
    def lookup(user_id: str) -> str:
        """Look a user up."""
        raise ToolError(f"no user {user_id}")

    wf = run_agent(
        sqlite_url,
        ToolRegistry().add(lookup),
        [ToolCall("lookup", {"user_id": "u_1"}), "There is no such user."],
    )

    assert wf.status is S.SUCCEEDED
    (call,) = wf.stages[0].outputs["tool_invocations"]
    assert (call["status"], call["result"]) == ("error", "ERROR: no user u_1")


def test_the_model_policy_keeps_the_loop_going_after_a_bug(sqlite_url):
    @tool
    def lookup(user_id: str) -> str:
        """Look a user up."""
        raise AttributeError("'NoneType' object has no attribute 'name'")

    wf = run_agent(
        sqlite_url,
        ToolRegistry().add(lookup),
        [ToolCall("lookup", {"user_id": "u_1"}), "I could not look it up."],
        tool_errors="model",
    )

    assert wf.status is S.SUCCEEDED
    (call,) = wf.stages[0].outputs["tool_invocations"]
    assert call["result"].startswith("ERROR: AttributeError: ")


def test_a_failing_step_leaves_the_checkpoint_untouched():
    # The task is called directly: what the engine would commit is the task's state.
    @tool
    def lookup(user_id: str) -> str:
        """Look a user up."""
        raise TypeError("unsupported operand")

    agent = AgentLoopTask(
        client=ScriptedModel([ToolCall("lookup", {"user_id": "u_1"})]).client(),
        tools=ToolRegistry().add(lookup),
    )
    task = TaskExecution.create("ag", "agent")
    task.status = WorkflowStatus.RUNNING
    stage = StageExecution(
        ref_id="ag", type="agent", name="ag", context={"prompt": "Go."}, tasks=[task]
    )
    first = agent.execute(stage)  # the model asks for the call
    assert first.state is not None
    stage.context.update(first.context)
    task.state = first.state
    before = copy.deepcopy((stage.context, task.state))

    with pytest.raises(PermanentError, match="tool 'lookup' raised TypeError"):
        agent.execute(stage)

    assert (stage.context, task.state) == before
    assert [i["status"] for i in task.state["invocations"]] == ["pending"]


def test_the_checkpoint_copy_is_equal_and_shares_no_container():
    state: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Go.", "tool_calls": []}],
        "usage": {"input_tokens": 3, "cost": 0.5},
        "invocations": [{"arguments": {"ids": [1, 2.0, True, None]}, "status": "pending"}],
    }
    copied = _private_copy(state)
    assert copied == state
    assert [type(v) for v in copied["invocations"][0]["arguments"]["ids"]] == [
        int,
        float,
        bool,
        type(None),
    ]
    copied["messages"].append({"role": "assistant"})
    copied["messages"][0]["tool_calls"].append("x")
    copied["invocations"][0]["arguments"]["ids"].pop()
    copied["usage"]["cost"] = 1.0
    assert state == {
        "messages": [{"role": "user", "content": "Go.", "tool_calls": []}],
        "usage": {"input_tokens": 3, "cost": 0.5},
        "invocations": [{"arguments": {"ids": [1, 2.0, True, None]}, "status": "pending"}],
    }


class _Opaque:
    def __init__(self) -> None:
        self.items = [1]


def test_other_values_in_a_checkpoint_are_deep_copied():
    # Only a stage built by hand holds such values (a committed state is JSON).
    inner = [1]
    state = {"messages": [], "pair": (inner, 2), "object": _Opaque()}
    copied = _private_copy(state)
    assert type(copied["pair"]) is tuple
    assert copied["pair"] == (inner, 2)
    assert copied["pair"][0] is not inner
    assert type(copied["object"]) is _Opaque
    assert copied["object"] is not state["object"]
    assert copied["object"].items == [1]
