"""PythonTask with real subprocesses and in-process callables, directly and via the engine."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from stabilize import StageExecution, TaskExecution, Workflow, WorkflowStatus
from stabilize.cancellation import CancellationToken
from stabilize.errors import TransientError
from stabilize.tasks._context import TaskConfigError
from stabilize.tasks.python_task import PythonTask
from stabilize.tasks.result import TaskResult
from stabilize.tasks.shell import ShellTask

S = WorkflowStatus
HANG_GUARD = 30.0
"""Seconds a condition may take before a test gives up (guards hangs only)."""


def wait_until(condition: Any, what: str) -> None:
    """Poll ``condition`` until it holds; the deadline only guards against hangs."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def run(context: dict[str, Any]) -> TaskResult:
    s = StageExecution(ref_id="p", type="python", name="p", context=context)
    return PythonTask().execute(s)


def py_stage(
    ref: str, context: dict[str, Any], requires: set[str] | None = None, task: str = "python"
) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        context=context,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, task)],
    )


@pytest.fixture
def helper_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module on sys.path with functions for the ``callable`` and ``module`` forms."""
    name = f"stz_helpers_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from stabilize import TaskResult

            def from_stage(stage):
                return {"seen": stage.context["value"] * 2}

            def as_result(stage):
                return TaskResult.failed_continue("soft failure", outputs={"x": 1})

            def add(a, b):
                return a + b

            async def later(stage):
                return {"async": True}

            def on_input(data):
                return {"doubled": data["n"] * 2}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# -- subprocess forms -------------------------------------------------------------------


def test_script_sees_input_and_returns_result() -> None:
    script = "print('chatter', INPUT['a']); RESULT = {'sum': INPUT['a'] + INPUT['b']}"
    result = run({"script": script, "a": 1, "inputs": {"b": 2}})
    assert result.status is S.SUCCEEDED
    assert result.outputs == {
        "stdout": "chatter 1\n",
        "stderr": "",
        "exit_code": 0,
        "result": {"sum": 3},
        "truncated": False,
    }


def test_stdout_that_looks_like_protocol_does_not_disturb_the_result() -> None:
    script = "print('{\"result\": 666}'); import sys; sys.stdout.write('RESULT=1'); RESULT = 7"
    result = run({"script": script})
    assert result.outputs["result"] == 7


def test_script_file_with_args_and_cwd(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("import os, sys\nRESULT = {'argv': sys.argv[1:], 'cwd': os.getcwd()}\n")
    work = tmp_path / "work"
    work.mkdir()
    result = run({"script_file": str(script), "args": ["x y", 3], "cwd": str(work)})
    assert result.outputs["result"] == {"argv": ["x y", "3"], "cwd": str(work)}


def test_module_and_function_form(helper_module: str, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(tmp_path)}
    result = run({"module": helper_module, "function": "on_input", "inputs": {"n": 4}, "env": env})
    assert result.outputs["result"] == {"doubled": 8}


def test_script_raising_fails_terminal_with_the_traceback_tail() -> None:
    result = run({"script": "x = 1\nraise ValueError('boom ' + str(x))"})
    assert result.status is S.TERMINAL
    assert result.error is not None
    assert "exit code 1" in result.error
    assert "ValueError: boom 1" in result.error
    assert "raise ValueError" in result.error  # the source line is shown
    assert result.outputs["exit_code"] == 1


def test_sys_exit_codes() -> None:
    assert run({"script": "RESULT = 5\nraise SystemExit(0)"}).outputs["result"] == 5
    failed = run({"script": "import sys; sys.exit(4)"})
    assert failed.status is S.TERMINAL
    assert failed.outputs["exit_code"] == 4


def test_result_that_is_not_json_fails_clearly() -> None:
    result = run({"script": "RESULT = object()"})
    assert result.status is S.TERMINAL
    assert result.error is not None
    assert "RESULT cannot be written as JSON" in result.error


def test_continue_on_failure_and_restart_on_failure() -> None:
    soft = run({"script": "raise RuntimeError('x')", "continue_on_failure": True})
    assert soft.status is S.FAILED_CONTINUE
    with pytest.raises(TransientError, match="RuntimeError"):
        run({"script": "raise RuntimeError('x')", "restart_on_failure": True})


def test_env_and_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STZ_PARENT", "p")
    script = "import os, sys; RESULT = [os.environ.get('A'), os.environ.get('STZ_PARENT')]"
    assert run({"script": script, "env": {"A": "1"}}).outputs["result"] == ["1", "p"]
    bare = run({"script": script, "env": {"A": "1"}, "inherit_env": False})
    assert bare.outputs["result"] == ["1", None]
    exe = run({"script": "import sys; RESULT = sys.executable", "python_path": sys.executable})
    assert exe.status is S.SUCCEEDED


def test_missing_interpreter_fails_terminal(tmp_path: Path) -> None:
    result = run({"script": "RESULT = 1", "python_path": str(tmp_path / "nope")})
    assert result.status is S.TERMINAL
    assert result.error is not None
    assert "could not start" in result.error


def test_output_cap_and_secrets() -> None:
    script = "print('key=' + INPUT['key']); print('x' * 1000); raise SystemExit(INPUT['key'])"
    result = run({"script": script, "key": "hunter2", "secrets": ["key"], "max_output_size": 50})
    assert result.outputs["truncated"] is True
    assert result.outputs["stdout"].startswith("key=***\n")
    assert len(result.outputs["stdout"]) <= 50
    assert result.error is not None
    assert "hunter2" not in result.error
    assert "hunter2" not in result.outputs["stderr"]


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(
        """
        import os, subprocess, time
        subprocess.Popen(["sleep", "600"])
        open(INPUT["pidfile"], "w").write(str(os.getpgrp()))
        time.sleep(600)
        """
    )
    result = run({"script": script, "pidfile": str(pidfile), "timeout": 2})
    assert result.status is S.TERMINAL
    assert result.error is not None
    assert "timed out after 2s" in result.error
    pgid = int(pidfile.read_text())
    wait_until(lambda: group_gone(pgid), "the process group to die")


def test_cancellation_kills_the_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = "import os, time\nopen(INPUT['p'], 'w').write(str(os.getpgrp()))\ntime.sleep(600)"
    s = StageExecution(
        ref_id="p", type="python", name="p", context={"script": script, "p": str(pidfile)}
    )
    s._cancel_token = CancellationToken()
    results: list[TaskResult] = []
    thread = threading.Thread(target=lambda: results.append(PythonTask().execute(s)))
    thread.start()
    wait_until(lambda: pidfile.exists() and pidfile.read_text() != "", "the pid file")
    PythonTask().on_cancel(s)
    thread.join(HANG_GUARD)
    assert not thread.is_alive()
    assert results[0].status is S.CANCELED
    wait_until(lambda: group_gone(int(pidfile.read_text())), "the process group to die")


# -- in-process callables ---------------------------------------------------------------


def test_callable_receives_the_stage(helper_module: str) -> None:
    result = run({"callable": f"{helper_module}:from_stage", "value": 21})
    assert result.outputs == {"seen": 42}


def test_callable_may_return_a_task_result(helper_module: str) -> None:
    result = run({"callable": f"{helper_module}:as_result"})
    assert result.status is S.FAILED_CONTINUE


def test_callable_with_inputs_as_kwargs(helper_module: str) -> None:
    context = {
        "callable": f"{helper_module}:add",
        "call_with": "inputs",
        "inputs": {"a": 2, "b": 3},
    }
    assert run(context).outputs == {"result": 5}


def test_async_callable(helper_module: str) -> None:
    assert run({"callable": f"{helper_module}:later"}).outputs == {"async": True}


def test_missing_function_in_a_real_module(helper_module: str) -> None:
    with pytest.raises(TaskConfigError, match="has no attribute 'nope'"):
        run({"callable": f"{helper_module}:nope"})


# -- through the engine -----------------------------------------------------------------


@pytest.fixture
def engine(make_engine: Any) -> Any:
    made = make_engine()
    made.registry.register("python", PythonTask)
    made.registry.register("shell", ShellTask)
    return made


def test_script_reads_upstream_outputs_through_the_engine(engine: Any, tmp_path: Path) -> None:
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"
    evil = f"'; import os; os.system('touch {marker}'); '"
    wf = Workflow.create(
        application="tests",
        name="python",
        stages=[
            py_stage("produce", {"command": ["printf", "%s", evil]}, task="shell"),
            py_stage("consume", {"script": "RESULT = INPUT['stdout'][::-1]"}, {"produce"}),
        ],
    )
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED
    consume = next(s for s in done.stages if s.ref_id == "consume")
    assert consume.outputs["result"] == evil[::-1]
    assert not marker.exists()


def test_failing_script_fails_the_workflow_with_the_traceback(engine: Any) -> None:
    wf = Workflow.create(
        application="tests",
        name="python",
        stages=[py_stage("bad", {"script": "raise KeyError('missing-thing')"})],
    )
    done = engine.run(wf)
    assert done.status is S.TERMINAL
    details = done.stages[0].tasks[0].task_exception_details
    assert details is not None
    assert "missing-thing" in details["message"]


def test_failed_continue_through_the_engine(engine: Any) -> None:
    wf = Workflow.create(
        application="tests",
        name="python",
        stages=[
            py_stage("soft", {"script": "raise SystemExit(2)", "continue_on_failure": True}),
            py_stage("after", {"script": "RESULT = 'ran'"}, {"soft"}),
        ],
    )
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED
    stages = {s.ref_id: s for s in done.stages}
    assert stages["soft"].status is S.FAILED_CONTINUE
    assert stages["after"].outputs["result"] == "ran"


def test_callable_through_the_engine(engine: Any, helper_module: str) -> None:
    wf = Workflow.create(
        application="tests",
        name="python",
        stages=[py_stage("call", {"callable": f"{helper_module}:from_stage", "value": 5})],
    )
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED
    assert done.stages[0].outputs == {"seen": 10}


def test_cancel_kills_the_script(engine: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = "import os, time\nopen(INPUT['p'], 'w').write(str(os.getpgrp()))\ntime.sleep(30)"
    wf = Workflow.create(
        application="tests",
        name="python",
        stages=[py_stage("long", {"script": script, "p": str(pidfile)})],
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    wait_until(lambda: pidfile.exists() and pidfile.read_text() != "", "the pid file")
    pgid = int(pidfile.read_text())
    engine.orchestrator.cancel(wf.id, user="tester", reason="stop")
    wait_until(lambda: group_gone(pgid), "the process group to die")
    wait_until(lambda: engine.store.retrieve(wf.id).status is S.CANCELED, "the cancel")
