"""A team of coding agents writes a small Python library and its tests, runs the tests with
the shell task, and loops on failures until they pass (bounded); a human approves the
release.

tester ── coder ── run_tests ── triage ──(tests fail: jump back to coder)
                                  │ pass
                               approve (human) ── release

Offline by default (a scripted model whose first attempt has a bug); ``--model`` for a
real one. ``uv run python examples/agent_team/team.py``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from stabilize import (
    ShellTask,
    StageExecution,
    Task,
    TaskResult,
    Workflow,
    WorkflowEngine,
    WorkflowStatus,
)
from stabilize.hitl import ApprovalTask, approve
from stabilize.llm import (
    AgentLoopTask,
    ChatMessage,
    LLMClient,
    ScriptedModel,
    ToolCall,
    ToolError,
    ToolRegistry,
    tool,
)

TESTS = """from slugify import slugify


def test_lowercase_and_dashes():
    assert slugify("Hello World") == "hello-world"


def test_punctuation_dropped():
    assert slugify("Ready, set... go!") == "ready-set-go"
"""
BUGGY = """def slugify(text):
    return text.lower().replace(" ", "-")
"""
FIXED = """import re


def slugify(text):
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)
"""


def scripted_reply(messages: list[ChatMessage]) -> str | ToolCall:
    """The offline team: the tester writes tests; the coder writes a bug, then fixes it."""
    system = next((m.content for m in messages if m.role == "system"), "")
    prompt = next((m.content for m in messages if m.role == "user"), "")
    turn = sum(1 for m in messages if m.role == "assistant")
    if turn == 1:
        return "Done."
    if "tester" in system:
        return ToolCall("write_file", {"path": "test_slugify.py", "content": TESTS})
    fixing = "Failing tests:" in prompt
    return ToolCall("write_file", {"path": "slugify.py", "content": FIXED if fixing else BUGGY})


def make_tools(workdir: Path) -> ToolRegistry:
    @tool
    def write_file(path: str, content: str) -> str:
        """Write a file of the project.

        Args:
            path: A file name inside the project (no directories).
            content: The whole file.
        """
        target = (workdir / path).resolve()
        if target.parent != workdir.resolve() or not path.endswith(".py"):
            raise ToolError(f"{path!r}: write a .py file at the project's top level")
        target.write_text(content, encoding="utf-8")
        return f"wrote {path} ({len(content)} bytes)"

    return ToolRegistry().add(write_file)


class Coder(AgentLoopTask):
    """The coder: its prompt carries the last test failures when triage sends it back."""

    @property
    def aliases(self) -> list[str]:
        return []

    def execute(self, stage: StageExecution) -> TaskResult:
        attempt = int(stage.context.get("attempt", 1))
        if stage.context.get("_agent_attempt") != attempt:
            stage.context.pop("_agent", None)  # a new attempt: a new conversation
        prompt = "Write slugify.py so that test_slugify.py passes."
        if stage.context.get("failures"):
            prompt += f"\nFailing tests:\n{stage.context['failures']}"
        stage.context.update(system="You are the coder.", prompt=prompt)
        result = super().execute(stage)
        result.context["_agent_attempt"] = attempt
        return result


class Tester(AgentLoopTask):
    @property
    def aliases(self) -> list[str]:
        return []

    def execute(self, stage: StageExecution) -> TaskResult:
        stage.context.update(
            system="You are the tester.", prompt="Write test_slugify.py for a slugify(text)."
        )
        return super().execute(stage)


class Triage(Task):
    """Sends the coder back with the failures while the tests fail (bounded)."""

    def execute(self, stage: StageExecution) -> TaskResult:
        # The engine counts this stage's jumps in its own context, which a loop keeps.
        attempt = int(stage.context.get("_jump_count", 0)) + 1
        if stage.context["returncode"] == 0:
            return TaskResult.success(outputs={"attempts": attempt, "tests": "passed"})
        if attempt >= stage.context["max_attempts"]:
            return TaskResult.terminal(f"tests still fail after {attempt} attempts")
        failures = stage.context["stdout"][-2000:]
        return TaskResult.jump_to("coder", context={"failures": failures, "attempt": attempt + 1})


def build(workdir: Path, max_attempts: int = 3) -> Workflow:
    def stage(ref: str, task: str, requires: set[str] | None = None, **ctx: Any) -> StageExecution:
        return StageExecution.for_task(
            ref, task, requisite_stage_ref_ids=requires or set(), context=ctx
        )

    shell = {"cwd": str(workdir), "timeout": 120}
    stages = [
        stage("tester", "tester"),
        stage("coder", "coder", {"tester"}),
        # Values reach the shell through env, never as placeholders in the command.
        stage(
            "run_tests",
            "shell",
            {"coder"},
            command='"$PYTHON" -m pytest -q -p no:cacheprovider',
            env={"PYTHON": sys.executable, "PYTHONDONTWRITEBYTECODE": "1"},
            expected_codes=[0, 1],
            **shell,
        ),
        stage("triage", "triage", {"run_tests"}),
        stage("approve", "approval", {"triage"}),
        stage(
            "release",
            "shell",
            {"approve"},
            command=(
                'mkdir -p dist && tar -czf "dist/slugify-$VERSION.tar.gz" slugify.py'
                ' && echo "released $VERSION"'
            ),
            env={"VERSION": "0.1.0"},
            **shell,
        ),
    ]
    context = {"max_attempts": max_attempts, "_max_jumps": max_attempts}
    return Workflow.create("agent-team", "slugify library", stages, context=context)


def main(
    db_url: str,
    client: LLMClient | None = None,
    *,
    workdir: Path | None = None,
    auto_approve: bool = True,
) -> Workflow:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="agent-team-"))
    workdir.mkdir(parents=True, exist_ok=True)
    client = client or ScriptedModel([scripted_reply] * 4).client()
    tools = make_tools(workdir)
    with WorkflowEngine(db_url) as engine:
        engine.register("tester", Tester(client=client, tools=tools))
        engine.register("coder", Coder(client=client, tools=tools))
        engine.register("shell", ShellTask)
        engine.register("triage", Triage())
        engine.register("approval", ApprovalTask())
        workflow = build(workdir)
        result = engine.run(workflow, timeout=120)  # returns once the approval gate waits
        gate = result.stage_by_ref_id("approve")
        if gate.status is WorkflowStatus.SUSPENDED:
            print(f"approval needed: stabilize approve {workflow.id} approve --db-url {db_url}")
            if not auto_approve:
                return result
            approve(engine.queue, workflow.id, gate.id, {"note": "offline run"}, user="example")
            engine.process(timeout=60)
        return engine.retrieve(workflow.id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", default="sqlite:///agent_team.db")
    parser.add_argument("--workdir", type=Path, default=Path("agent_team_project"))
    parser.add_argument("--model", help="a real model (default: the offline scripted one)")
    parser.add_argument("--base-url")
    parser.add_argument("--api", choices=["openai", "ollama"], default="openai")
    parser.add_argument("--wait-for-human", action="store_true")
    args = parser.parse_args()
    live = LLMClient(args.model, base_url=args.base_url, api=args.api) if args.model else None
    wf = main(args.db_url, live, workdir=args.workdir, auto_approve=not args.wait_for_human)
    for s in wf.stages:
        print(f"{s.ref_id:<10} {s.status.value:<10} {s.outputs.get('stdout', '')[-80:]}")
