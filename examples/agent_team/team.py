"""A team of coding agents writes a small Python library and its tests, runs the tests with
the shell task, and loops on failures until they pass (bounded); a human approves the
release.

tester ── coder ── run_tests ── triage ──(tests fail: jump back to coder)
                                  │ pass
                               approve (human) ── release

Offline by default (a scripted model whose first attempt has a bug); ``--model`` for a
real one. ``uv run python -m examples.agent_team [--chaos]`` (see README.md in this folder).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from examples._chaos import Ledger, LedgerTransport, hang_once

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


def scripted_client(ledger: Ledger | None = None) -> LLMClient:
    """The offline model, its requests recorded in ``ledger`` if one is given."""
    model = ScriptedModel([scripted_reply] * 4)
    if ledger is None:
        return model.client()
    return LLMClient(
        "scripted",
        api="openai",
        api_key="",
        base_url="http://scripted.invalid/v1",
        transport=LedgerTransport(model.transport(), ledger),
    )


def client_for(
    model: str | None, base_url: str | None, api: str, ledger: Ledger | None = None
) -> LLMClient:
    """The scripted model, or ``model`` at ``base_url`` (its key from the environment)."""
    if not model:
        return scripted_client(ledger)
    kwargs: dict[str, Any] = {"api": api}
    if base_url:
        kwargs["base_url"] = base_url
    if ledger is not None:
        kwargs["transport"] = LedgerTransport(httpx.HTTPTransport(retries=1), ledger)
    return LLMClient(model, **kwargs)


def make_tools(
    workdir: Path, ledger: Ledger | None = None, hang_marker: Path | None = None
) -> ToolRegistry:
    """The agents' tool, recording each call in ``ledger`` if one is given.

    With ``hang_marker``, the coder's first ``write_file`` (the first write of a file that
    is not a test) writes the marker file and then blocks: the chaos run kills its worker there.
    """

    @tool
    def write_file(path: str, content: str, idempotency_key: str | None = None) -> str:
        """Write a file of the project.

        Args:
            path: A file name inside the project (no directories).
            content: The whole file.
        """
        key = idempotency_key or "-"
        if ledger is not None:
            ledger.record("tool", key, "start", tool="write_file", path=path)
        target = (workdir / path).resolve()
        if target.parent != workdir.resolve() or not path.endswith(".py"):
            raise ToolError(f"{path!r}: write a .py file at the project's top level")
        if hang_marker is not None and not path.startswith("test_"):
            hang_once(hang_marker, key)
        target.write_text(content, encoding="utf-8")  # a re-run writes the same file whole
        if ledger is not None:
            ledger.record("tool", key, "end", tool="write_file", path=path)
        return f"wrote {path} ({len(content)} bytes)"

    return ToolRegistry().add(write_file)


class Coder(AgentLoopTask):
    """The coder: its prompt carries the last test failures when triage sends it back.

    Triage's jump runs this stage again, and AgentLoopTask then starts a new conversation
    (from this prompt) whose step numbers, hence its tools' idempotency keys, go on from
    the last attempt's.
    """

    @property
    def aliases(self) -> list[str]:
        return []

    def execute(self, stage: StageExecution) -> TaskResult:
        prompt = "Write slugify.py so that test_slugify.py passes."
        if stage.context.get("failures"):
            prompt += f"\nFailing tests:\n{stage.context['failures']}"
        stage.context.update(system="You are the coder.", prompt=prompt)
        return super().execute(stage)


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
        # The engine counts this stage's jumps (jump_count), which a loop keeps.
        attempt = stage.jump_count + 1
        if stage.context["returncode"] == 0:
            return TaskResult.success(outputs={"attempts": attempt, "tests": "passed"})
        if attempt >= stage.context["max_attempts"]:
            return TaskResult.terminal(f"tests still fail after {attempt} attempts")
        failures = stage.context["stdout"][-2000:]
        return TaskResult.jump_to("coder", context={"failures": failures, "attempt": attempt + 1})


def register(engine: WorkflowEngine, client: LLMClient, tools: ToolRegistry) -> None:
    """Register the team's tasks on an engine (every worker process does the same)."""
    engine.register("tester", Tester(client=client, tools=tools))
    engine.register("coder", Coder(client=client, tools=tools))
    engine.register("shell", ShellTask)
    engine.register("triage", Triage())
    engine.register("approval", ApprovalTask())


def build(workdir: Path, max_attempts: int = 3) -> Workflow:
    """The workflow that writes, tests and releases the library in ``workdir``."""

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
            # The project's tests need no pytest plugin; autoloading whatever plugins the
            # worker's environment holds costs seconds a run (or breaks it).
            env={
                "PYTHON": sys.executable,
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            },
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
    ledger: Ledger | None = None,
) -> Workflow:
    """Run the team on ``db_url`` in this process and return the workflow.

    Args:
        db_url: The database (``sqlite:///agent_team.db``).
        client: The model client (default: the scripted model).
        workdir: The project folder (default: a new temporary directory).
        auto_approve: Approve the release once the gate waits; False returns the workflow
            waiting there (approve it, then run a worker to finish it).
        ledger: Where to record every model and tool call (default: nowhere).
    """
    workdir = workdir or Path(tempfile.mkdtemp(prefix="agent-team-"))
    workdir.mkdir(parents=True, exist_ok=True)
    client = client or scripted_client(ledger)
    with WorkflowEngine(db_url) as engine:
        register(engine, client, make_tools(workdir, ledger))
        workflow = build(workdir)
        result = engine.run(workflow, timeout=120)  # returns once the approval gate waits
        gate = result.stage_by_ref_id("approve")
        if gate.status is WorkflowStatus.SUSPENDED:
            print(f"approval needed: stabilize approve {workflow.id} approve --db-url {db_url}")
            if not auto_approve:
                print(
                    "then finish the run: uv run python -m examples.agent_team.worker "
                    f"{db_url} {workdir} {workflow.id}"
                )
                return result
            approve(engine.queue, workflow.id, gate.id, {"note": "offline run"}, user="example")
            engine.process(timeout=60)
        return engine.retrieve(workflow.id)
