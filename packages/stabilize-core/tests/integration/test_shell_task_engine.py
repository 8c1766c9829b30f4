"""ShellTask with real processes: directly and through the engine on a real SQLite file."""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from stabilize import StageExecution, TaskExecution, Workflow, WorkflowStatus
from stabilize.cancellation import CancellationToken
from stabilize.errors import TransientError
from stabilize.queue.processor.config import QueueProcessorConfig
from stabilize.tasks._process import run_process
from stabilize.tasks.result import TaskResult
from stabilize.tasks.shell import ShellTask

S = WorkflowStatus
HANG_GUARD = 30.0
"""Seconds a condition may take before a test gives up (guards hangs only)."""

INJECTIONS = [
    "x; touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "'; touch {marker}; '",
    '"; touch {marker}; "',
    "x\ntouch {marker}",
    "x\ntouch {marker} #",
    "x && touch {marker} || touch {marker}",
    "x | touch {marker}",
]


def wait_until(condition: Any, what: str) -> None:
    """Poll ``condition`` until it holds; the deadline only guards against hangs."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def run(context: dict[str, Any], task: ShellTask | None = None) -> TaskResult:
    s = StageExecution(ref_id="s", type="shell", name="s", context=context)
    return (task or ShellTask()).execute(s)


def group_gone(pgid: int) -> bool:
    """True once no process (not even an unreaped zombie) is left in group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def read_pid(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip() != "", f"pid in {path}")
    return int(path.read_text().strip())


def shell_stage(
    ref: str, context: dict[str, Any], requires: set[str] | None = None
) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="shell",
        name=ref,
        context=context,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, "shell")],
    )


# -- direct execution -------------------------------------------------------------------


def test_string_command_runs_through_the_shell(tmp_path: Path) -> None:
    result = run({"command": "echo out; echo err >&2; pwd", "cwd": str(tmp_path)})
    assert result.status is S.SUCCEEDED
    assert result.outputs == {
        "stdout": f"out\n{tmp_path}",
        "stderr": "err",
        "returncode": 0,
        "truncated": False,
    }


@pytest.mark.parametrize("template", INJECTIONS)
@pytest.mark.parametrize(
    "command",
    [
        "echo {value}",
        "echo '{value}'",
        'echo "[{value}]"',
        "echo pre{value}post",
        ["echo", "{value}"],
        ["sh", "-c", 'echo "$1"', "sh", "--v={value}"],
    ],
)
def test_injected_values_never_run(tmp_path: Path, template: str, command: Any) -> None:
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"
    value = template.format(marker=marker)
    result = run({"command": command, "value": value, "cwd": str(tmp_path)})
    assert result.status is S.SUCCEEDED, result.error
    assert not marker.exists()
    assert value in result.outputs["stdout"]


def test_injection_with_shell_false(tmp_path: Path) -> None:
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"
    value = f"$(touch {marker}); touch {marker}"
    result = run({"command": "echo '{v}' {v}", "v": value, "shell": False})
    assert result.outputs["stdout"] == f"{value} {value}"
    assert not marker.exists()


def test_value_with_quotes_and_newlines_round_trips(tmp_path: Path) -> None:
    value = 'it\'s "quoted"\n\t$HOME `x` \\ end'
    result = run({"command": "printf '%s' {v}", "v": value})
    assert result.outputs["stdout"] == value


def test_env_is_merged_over_the_environment_unless_not_inherited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STZ_FROM_PARENT", "parent")
    context = {"command": "echo $GREETING-$STZ_FROM_PARENT", "env": {"GREETING": "hi", "N": 1}}
    assert run(context).outputs["stdout"] == "hi-parent"
    bare = run({**context, "inherit_env": False})
    assert bare.outputs["stdout"] == "hi-"


def test_stdin_is_fed_and_closed() -> None:
    result = run({"command": ["cat"], "stdin": "line 1\nline 2\n"})
    assert result.outputs["stdout"] == "line 1\nline 2"


def test_stdin_ignored_by_the_command_does_not_hang() -> None:
    result = run({"command": "true", "stdin": "x" * 1_000_000})
    assert result.status is S.SUCCEEDED


def test_expected_codes() -> None:
    assert run({"command": "exit 3", "expected_codes": [0, 3]}).status is S.SUCCEEDED
    assert run({"command": "exit 3", "expected_codes": 3}).status is S.SUCCEEDED
    result = run({"command": "echo bad news >&2; exit 4", "expected_codes": [0, 3]})
    assert result.status is S.TERMINAL
    assert result.error is not None
    assert "exited with code 4" in result.error
    assert "bad news" in result.error
    assert result.outputs["returncode"] == 4


def test_failure_message_quotes_only_the_tail_of_stderr() -> None:
    command = "python3 -c \"import sys; sys.stderr.write('a' * 100000 + 'THE END')\"; exit 1"
    result = run({"command": command})
    assert result.error is not None
    assert result.error.endswith("THE END")
    assert len(result.error) < 3000


def test_continue_on_failure_gives_failed_continue() -> None:
    result = run({"command": "echo partial; exit 2", "continue_on_failure": True})
    assert result.status is S.FAILED_CONTINUE
    assert result.outputs["stdout"] == "partial"


def test_restart_on_failure_raises_transient() -> None:
    with pytest.raises(TransientError, match="exited with code 5"):
        run({"command": "exit 5", "restart_on_failure": True})


def test_missing_program_fails_terminal_with_the_reason(tmp_path: Path) -> None:
    result = run({"command": [str(tmp_path / "nope")]})
    assert result.status is S.TERMINAL
    assert result.error is not None
    assert "could not start" in result.error
    assert "No such file" in result.error


def test_output_is_capped_per_stream() -> None:
    command = "head -c 5000 /dev/zero | tr '\\0' a; head -c 10 /dev/zero | tr '\\0' b >&2"
    result = run({"command": command, "max_output_size": 100})
    assert result.outputs["stdout"] == "a" * 100
    assert result.outputs["stderr"] == "b" * 10
    assert result.outputs["truncated"] is True


def test_huge_output_does_not_fill_memory_or_block() -> None:
    result = run({"command": "head -c 50000000 /dev/zero", "max_output_size": 10})
    assert result.status is S.SUCCEEDED
    assert len(result.outputs["stdout"]) == 10
    assert result.outputs["truncated"] is True


def test_binary_mode_adds_base64_stdout() -> None:
    result = run({"command": "printf '\\000\\377\\001'", "binary": True})
    assert base64.b64decode(result.outputs["stdout_b64"]) == b"\x00\xff\x01"


def test_secrets_are_masked_in_outputs_and_errors() -> None:
    context = {
        "command": "echo token={token}; echo {token} >&2; exit 1",
        "token": "s3cr3t-value",
        "secrets": ["token"],
    }
    result = run(context)
    assert result.error is not None
    assert "s3cr3t-value" not in result.error
    assert "***" in result.error
    assert result.outputs["stdout"] == "token=***"
    assert result.outputs["stderr"] == "***"


def test_secret_cut_by_the_output_cap_is_masked() -> None:
    context = {"command": "echo 0123456789s3cr3t", "t": "s3cr3t", "secrets": ["t"]}
    result = run({**context, "max_output_size": 13})
    assert result.outputs["stdout"] == "0123456789***"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    command = "echo $$ > {pidfile}; sleep 600 & sleep 600 & wait"
    result = run({"command": command, "pidfile": str(pidfile), "timeout": 1})
    assert result.status is S.TERMINAL
    assert result.error is not None
    assert "timed out after 1s" in result.error
    pgid = int(pidfile.read_text())
    wait_until(lambda: group_gone(pgid), "the process group to die")


def test_processes_ignoring_sigterm_are_killed_after_the_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = ShellTask()
    task.kill_grace = 0.2
    command = "trap '' TERM; echo $$ > {pidfile}; sleep 600 & wait"
    result = run({"command": command, "pidfile": str(pidfile), "timeout": 1}, task)
    assert result.status is S.TERMINAL
    pgid = int(pidfile.read_text())
    wait_until(lambda: group_gone(pgid), "the process group to die")


def test_members_left_running_when_the_command_ends_are_stopped(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    command = "echo $$ > {pidfile}; sleep 600 & echo started"
    result = run({"command": command, "pidfile": str(pidfile)})
    assert result.status is S.SUCCEEDED
    assert result.outputs["stdout"] == "started"
    pgid = int(pidfile.read_text())
    wait_until(lambda: group_gone(pgid), "the leftover sleep to die")


def test_cancellation_token_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    s = StageExecution(
        ref_id="s",
        type="shell",
        name="s",
        context={"command": "echo $$ > {p}; sleep 600 & wait", "p": str(pidfile)},
    )
    s._cancel_token = CancellationToken()
    results: list[TaskResult] = []
    thread = threading.Thread(target=lambda: results.append(ShellTask().execute(s)))
    thread.start()
    pgid = read_pid(pidfile)
    ShellTask().on_cancel(s)
    thread.join(HANG_GUARD)
    assert not thread.is_alive()
    assert results[0].status is S.CANCELED
    wait_until(lambda: group_gone(pgid), "the process group to die")


def test_run_process_reports_the_group() -> None:
    outcome = run_process(["sh", "-c", "exit 7"], timeout=HANG_GUARD)
    assert outcome.returncode == 7
    assert outcome.pgid is not None
    wait_until(lambda: group_gone(outcome.pgid or 0), "the group to be gone")


# -- through the engine -----------------------------------------------------------------


@pytest.fixture
def shell_engine(make_engine: Any) -> Any:
    engine = make_engine()
    engine.registry.register("shell", ShellTask)
    return engine


def test_upstream_outputs_fill_placeholders_safely(shell_engine: Any, tmp_path: Path) -> None:
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"
    evil = f"v1; touch {marker} $(touch {marker}) `touch {marker}`"
    wf = Workflow.create(
        application="tests",
        name="shell",
        stages=[
            shell_stage("produce", {"command": ["printf", "%s", evil]}),
            shell_stage(
                "consume",
                {"command": "echo got {stdout}; echo argv {stdout}", "cwd": str(tmp_path)},
                {"produce"},
            ),
            shell_stage("list", {"command": ["echo", "{stdout}"]}, {"consume"}),
        ],
    )
    done = shell_engine.run(wf)
    assert done.status is S.SUCCEEDED
    stages = {s.ref_id: s for s in done.stages}
    assert stages["produce"].outputs["stdout"] == evil
    assert stages["consume"].outputs["stdout"] == f"got {evil}\nargv {evil}"
    # The nearest upstream output wins: "list" sees consume's stdout.
    assert stages["list"].outputs["stdout"] == f"got {evil}\nargv {evil}"
    assert not marker.exists()


def test_stdout_reaches_the_next_placeholder_without_its_trailing_newline(
    shell_engine: Any,
) -> None:
    # Issue 14: the original gives stdout without the trailing newline; "got:{stdout}"
    # used to print "got:'build-42\n'" (the newline quoted into the word).
    wf = Workflow.create(
        application="tests",
        name="shell",
        stages=[
            shell_stage("build", {"command": "echo build-42"}),
            shell_stage("report", {"command": "echo got:{stdout}"}, {"build"}),
            shell_stage("lines", {"command": "printf 'a\\nb\\n\\n'; echo e >&2"}),
        ],
    )
    done = shell_engine.run(wf)
    assert done.status is S.SUCCEEDED
    assert done.stage_by_ref_id("build").outputs["stdout"] == "build-42"
    assert done.stage_by_ref_id("report").outputs["stdout"] == "got:build-42"
    lines = done.stage_by_ref_id("lines").outputs
    assert (lines["stdout"], lines["stderr"]) == ("a\nb", "e")


def test_an_upstream_subscript_payload_never_reaches_bash_arithmetic(
    shell_engine: Any, tmp_path: Path
) -> None:
    # Issue 13: bash evaluates array subscripts in arithmetic even from a quoted word, so
    # `[[ 'a[$(touch M)]' -gt 3 ]]` ran `touch M`. The value must now be a plain number.
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"

    def workflow(value: str) -> Workflow:
        return Workflow.create(
            application="tests",
            name="shell",
            stages=[
                shell_stage("produce", {"command": ["printf", "%s", value]}),
                shell_stage(
                    "compare",
                    {
                        "command": "if [[ {stdout} -gt 3 ]]; then echo big; else echo small; fi",
                        "shell": "/bin/bash",
                        "cwd": str(tmp_path),
                    },
                    {"produce"},
                ),
            ],
        )

    refused = shell_engine.run(workflow(f"a[$(touch {marker})]"))
    assert refused.status is S.TERMINAL
    compare = refused.stage_by_ref_id("compare")
    details = compare.tasks[0].task_exception_details
    assert details is not None
    assert "placeholder {stdout}" in details["message"]
    assert "inside [[ ]]" in details["message"]
    assert "a plain whole number" in details["message"]
    assert "stdout" not in compare.outputs  # refused before the shell ran
    assert not marker.exists()
    # The same worker goes on running workflows; a number passes.
    done = shell_engine.run(workflow("7"))
    assert done.status is S.SUCCEEDED
    assert done.stage_by_ref_id("compare").outputs["stdout"] == "big"
    assert not marker.exists()


def test_failed_continue_lets_downstream_run(shell_engine: Any) -> None:
    wf = Workflow.create(
        application="tests",
        name="shell",
        stages=[
            shell_stage("flaky", {"command": "exit 9", "continue_on_failure": True}),
            shell_stage("after", {"command": "echo ran"}, {"flaky"}),
        ],
    )
    done = shell_engine.run(wf)
    stages = {s.ref_id: s for s in done.stages}
    assert stages["flaky"].status is S.FAILED_CONTINUE
    assert stages["flaky"].outputs["returncode"] == 9
    assert stages["after"].outputs["stdout"] == "ran"
    assert done.status is S.SUCCEEDED


def test_nonzero_exit_fails_the_workflow_with_the_code(shell_engine: Any) -> None:
    wf = Workflow.create(
        application="tests",
        name="shell",
        stages=[shell_stage("bad", {"command": "echo oops >&2; exit 3"})],
    )
    done = shell_engine.run(wf)
    assert done.status is S.TERMINAL
    task = done.stages[0].tasks[0]
    assert task.task_exception_details is not None
    message = task.task_exception_details["message"]
    assert "exited with code 3" in message
    assert "oops" in message


def test_unknown_placeholder_fails_terminal_naming_it(shell_engine: Any) -> None:
    wf = Workflow.create(
        application="tests",
        name="shell",
        stages=[shell_stage("bad", {"command": "echo {nonexistent}"})],
    )
    done = shell_engine.run(wf)
    assert done.status is S.TERMINAL
    details = done.stages[0].tasks[0].task_exception_details
    assert details is not None
    assert "{nonexistent}" in details["message"]


def test_restart_on_failure_retries_until_it_succeeds(make_engine: Any, tmp_path: Path) -> None:
    config = QueueProcessorConfig(
        poll_frequency_ms=10,
        transient_backoff_base_seconds=0.01,
        transient_backoff_max_seconds=0.01,
    )
    engine = make_engine(config=config)
    engine.registry.register("shell", ShellTask)
    counter = tmp_path / "count"
    command = "echo x >> {counter}; wc -l < {counter} | grep -q '^ *3$'"
    wf = Workflow.create(
        application="tests",
        name="shell",
        stages=[
            shell_stage(
                "retry", {"command": command, "counter": str(counter), "restart_on_failure": True}
            )
        ],
    )
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED
    assert counter.read_text().count("x") == 3


def test_cancel_kills_the_running_process_group(shell_engine: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    wf = Workflow.create(
        application="tests",
        name="shell",
        stages=[
            shell_stage("long", {"command": "echo $$ > {p}; sleep 30", "p": str(pidfile)}),
            shell_stage("never", {"command": "echo no"}, {"long"}),
        ],
    )
    shell_engine.store.store(wf)
    shell_engine.orchestrator.start(wf)
    shell_engine.processor.start()
    pgid = read_pid(pidfile)
    shell_engine.orchestrator.cancel(wf.id, user="tester", reason="stop it")
    wait_until(lambda: group_gone(pgid), "the process group to die")

    def canceled() -> bool:
        return bool(shell_engine.store.retrieve(wf.id).status is S.CANCELED)

    wait_until(canceled, "the workflow to be canceled")
    stages = {s.ref_id: s for s in shell_engine.store.retrieve(wf.id).stages}
    assert stages["never"].status is S.NOT_STARTED


class EngineTimesOutFirst(ShellTask):
    """A shell task whose engine-side timeout is shorter than the command's own."""

    def get_execution_timeout(self, stage: StageExecution) -> timedelta | None:
        return timedelta(seconds=0.5)


def test_engine_timeout_kills_the_process_group_through_on_timeout(
    make_engine: Any, tmp_path: Path
) -> None:
    engine = make_engine()
    engine.registry.register("shell", EngineTimesOutFirst)
    pidfile = tmp_path / "pid"
    wf = Workflow.create(
        application="tests",
        name="shell",
        stages=[
            shell_stage(
                "long",
                {"command": "echo $$ > {p}; sleep 600 & wait", "p": str(pidfile), "timeout": 600},
            )
        ],
    )
    done = engine.run(wf)
    assert done.status is S.TERMINAL
    details = done.stages[0].tasks[0].task_exception_details
    assert details is not None
    assert "exceeded its timeout" in details["message"]
    pgid = int(pidfile.read_text())
    wait_until(lambda: group_gone(pgid), "the process group to die")
