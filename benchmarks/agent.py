"""``agent_loop_20``: tool-using agents (stabilize.llm's ``AgentLoopTask``) on an offline model.

Each of the 20 workflows is one stage running ``AgentLoopTask``. The model is the llm
package's ``ScriptedModel`` behind ``LLMClient(transport=httpx.MockTransport(...))``: no
network, and every conversation gets the same four answers (a tool call, another, a third,
then the final answer). The task takes one step per execution (a model call or a tool
call), and the engine commits each step's checkpoint, so one stage is 7 executions.

``stabilize.llm`` is imported only when the workload is registered: a checkout without it
(or without the API used here) skips the workload with a message saying why.
"""

from __future__ import annotations

from harness import RUNS, WorkloadSkipped

from stabilize.models import StageExecution, TaskExecution, Workflow
from stabilize.tasks.registry import TaskRegistry
from stabilize.tasks.result import TaskResult

AGENT_WORKFLOWS = 20
AGENT_TOOL_CALLS = 3
# One model call per tool call plus the one that answers, and the tool calls themselves.
AGENT_STEPS_PER_STAGE = 2 * AGENT_TOOL_CALLS + 1
AGENT_TASK = "bench_agent"


def agent_workflows() -> list[Workflow]:
    """The 20 one-stage workflows of ``agent_loop_20``."""
    return [
        Workflow.create(
            application="bench",
            name="agent-loop",
            stages=[
                StageExecution(
                    ref_id="agent",
                    type=AGENT_TASK,
                    name="agent",
                    context={"prompt": f"Look up three facts, then answer ({i})."},
                    tasks=[
                        TaskExecution.create("agent", AGENT_TASK, stage_start=True, stage_end=True)
                    ],
                )
            ],
        )
        for i in range(AGENT_WORKFLOWS)
    ]


def register_agent(registry: TaskRegistry) -> None:
    """Register the scripted agent as ``bench_agent`` on ``registry``.

    Raises:
        WorkloadSkipped: ``stabilize.llm`` (or httpx) is not installed, or lacks the
            offline model and the tool registry this workload uses.
    """
    try:
        import httpx

        from stabilize.llm import AgentLoopTask, LLMClient, ScriptedModel, ToolCall, ToolRegistry
        from stabilize.llm import tool as make_tool
    except ImportError as exc:
        raise WorkloadSkipped(
            f"agent_loop_20 skipped: this checkout cannot run AgentLoopTask offline ({exc})"
        ) from exc

    def lookup(key: str) -> str:
        """Look up one fact.

        Args:
            key: The fact's name.
        """
        return f"the fact called {key}"

    script: list[object] = [ToolCall("lookup", {"key": f"fact-{i}"}) for i in range(3)]
    script.append("The three facts, summed up.")
    model = ScriptedModel(script)
    transport: httpx.MockTransport = model.transport()  # answers from the script, offline
    client = LLMClient(
        "scripted",
        api="openai",
        api_key="",
        base_url="http://scripted.invalid/v1",
        transport=transport,
    )

    class CountedAgent(AgentLoopTask):
        """AgentLoopTask that counts its executions (one per step)."""

        @property
        def aliases(self) -> list[str]:
            return []  # the built-in agent names stay the built-in task's

        def execute(self, stage: StageExecution) -> TaskResult:
            RUNS.bump()
            return super().execute(stage)

    tools = ToolRegistry().add(make_tool(lookup))
    registry.register(AGENT_TASK, CountedAgent(client=client, tools=tools))
