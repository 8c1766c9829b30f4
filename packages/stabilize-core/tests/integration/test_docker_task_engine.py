"""DockerTask with real processes: the real docker CLI without an engine, and a stand-in CLI.

No Docker engine is needed. The real ``docker`` CLI (skipped when it is not installed) is
pointed at a socket that does not exist, so the "engine not reachable" error is the same
on every machine. A small stand-in ``docker`` program (a Python script written to the
test's directory) exercises the rest of the execution path: outputs, container and image
ids, failures, output caps, secrets, timeouts and cancellation. The subprocess runner the
task uses (``stabilize.tasks._process``) is tested here too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stabilize import (
    Orchestrator,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
    WorkflowStatus,
)
from stabilize.cancellation import CancellationToken
from stabilize.queue.processor.config import QueueProcessorConfig
from stabilize.tasks._process import run_process
from stabilize.tasks.docker import DockerTask
from stabilize.tasks.result import TaskResult

S = WorkflowStatus

HANG_GUARD = 30.0
"""Seconds a condition may take before a test gives up (guards hangs only)."""

UNREACHABLE = "DockerTask: the Docker engine is not reachable"


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; the deadline only guards against hangs."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def stage(context: dict[str, Any], token: CancellationToken | None = None) -> StageExecution:
    s = StageExecution(ref_id="docker", type="docker", name="docker", context=context)
    s._cancel_token = token
    return s


# -- the real docker CLI, no engine ---------------------------------------------------------


@pytest.fixture
def docker_without_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The real docker CLI, pointed at a Docker socket that does not exist."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # no user contexts
    return docker


@pytest.mark.parametrize(
    "context",
    [
        {"action": "run", "image": "alpine:3", "command": "true"},
        {"action": "run", "image": "alpine:3", "detach": True},
        {"action": "exec", "container": "web", "command": ["id"]},
        {"action": "pull", "image": "alpine:3"},
        {"action": "ps", "all": True},
        {"action": "images"},
        {"action": "logs", "container": "web", "tail": 10},
        {"action": "stop", "container": "web"},
        {"action": "rm", "container": "web", "force": True},
    ],
    ids=lambda c: f"{c['action']}{'-detach' if c.get('detach') else ''}",
)
def test_every_action_says_the_engine_is_not_reachable(
    docker_without_engine: str, context: dict[str, Any]
) -> None:
    result = DockerTask().execute(stage(context))
    assert result.status is S.TERMINAL
    assert result.error is not None
    assert result.error.startswith(UNREACHABLE)
    assert "Cannot connect to the Docker daemon" in result.error
    assert result.outputs["exit_code"] != 0


def test_build_says_the_engine_is_not_reachable(docker_without_engine: str, tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM alpine:3\n")
    result = DockerTask().execute(
        stage({"action": "build", "context": str(tmp_path / "ctx"), "tag": "app:test"})
    )
    assert result.status is S.TERMINAL
    assert (result.error or "").startswith(UNREACHABLE)
    assert result.outputs["image_id"] is None


# -- through the engine ---------------------------------------------------------------------


@dataclass
class Engine:
    """A real engine on a fresh SQLite file."""

    store: SqliteWorkflowStore
    registry: TaskRegistry
    processor: QueueProcessor
    orchestrator: Orchestrator

    def run(self, *stages: StageExecution) -> Workflow:
        wf = Workflow.create(application="tests", name="docker", stages=stages)
        self.store.store(wf)
        self.orchestrator.start(wf)
        self.processor.process_all(timeout=HANG_GUARD)
        return self.store.retrieve(wf.id)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'wf.db'}"
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()
    registry = TaskRegistry()  # each test registers the DockerTask it needs
    processor = QueueProcessor(
        queue,
        store=store,
        task_registry=registry,
        config=QueueProcessorConfig(poll_frequency_ms=10, cancel_check_interval_seconds=0.05),
    )
    yield Engine(store, registry, processor, Orchestrator(queue, store=store))
    processor.stop(wait=True, timeout=10)


def docker_stage(ref: str, context: dict[str, Any], *requires: str) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="docker",
        name=ref,
        context=context,
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(f"{ref}.docker", "docker")],
    )


def test_the_engine_fails_the_workflow_when_no_engine_runs(
    docker_without_engine: str, engine: Engine
) -> None:
    engine.registry.register("docker", DockerTask)
    done = engine.run(docker_stage("run", {"image": "alpine:3", "command": "echo hi"}))
    assert done.status is S.TERMINAL
    (run,) = done.stages
    assert run.status is S.TERMINAL
    message = run.tasks[0].task_exception_details["message"]
    assert message.startswith(UNREACHABLE)
    assert run.outputs["exit_code"] == 125


def test_the_engine_fails_the_workflow_when_the_cli_is_missing(engine: Engine) -> None:
    engine.registry.register("docker", DockerTask)
    done = engine.run(
        docker_stage("ps", {"action": "ps", "docker_path": "stabilize-no-such-docker"})
    )
    assert done.status is S.TERMINAL
    message = done.stages[0].tasks[0].task_exception_details["message"]
    assert message == (
        "DockerTask: the docker CLI is not installed (stabilize-no-such-docker not found on PATH)"
    )


def test_the_engine_fails_a_bad_key_before_running_anything(engine: Engine) -> None:
    engine.registry.register("docker", DockerTask)
    done = engine.run(docker_stage("run", {"image": "alpine", "privileged": True}))
    assert done.status is S.TERMINAL
    message = done.stages[0].tasks[0].task_exception_details["message"]
    assert "context key 'privileged'" in message
    assert 'registry.register("docker", DockerTask(allow_privileged=True))' in message


# -- a stand-in docker CLI --------------------------------------------------------------------

FAKE_DOCKER = """\
import json, sys, time
from pathlib import Path

here = Path(__file__).parent
args = sys.argv[1:]
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps(args) + "\\n")
for arg in args:
    if arg.startswith("--cidfile="):
        Path(arg.split("=", 1)[1]).write_text("c0ffee\\n")
    if arg.startswith("--iidfile="):
        Path(arg.split("=", 1)[1]).write_text("sha256:1d\\n")
positional = [a for a in args[1:] if not a.startswith("-")]
target = positional[0] if positional else ""
if target == "sleepy":
    (here / "started").touch()
    while True:
        time.sleep(0.05)
if target == "fail":
    print("partial")
    print("boom: something broke", file=sys.stderr)
    sys.exit(7)
if target == "big":
    sys.stdout.write("x" * 200000)
elif target == "secret":
    print("password is hunter2")
    print("hunter2", file=sys.stderr)
elif target == "dind":
    print("Cannot connect to the Docker daemon at unix:///inner.sock", file=sys.stderr)
    sys.exit(1)
elif args[0] == "run" and "--detach" in args:
    print("c0ffee")
else:
    print("ok " + " ".join(args))
"""


@dataclass
class FakeDocker:
    """The stand-in CLI and what it was asked to do."""

    path: Path

    @property
    def dir(self) -> Path:
        return self.path.parent

    def calls(self) -> list[list[str]]:
        log = self.dir / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def run(self, context: dict[str, Any], token: CancellationToken | None = None) -> TaskResult:
        return DockerTask(docker_path=str(self.path)).execute(stage(context, token))


@pytest.fixture
def fake_docker(tmp_path: Path) -> FakeDocker:
    d = tmp_path / "fakebin"
    d.mkdir()
    path = d / "docker"
    path.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
    path.chmod(0o755)
    return FakeDocker(path)


def test_a_successful_run_reports_its_outputs(fake_docker: FakeDocker) -> None:
    result = fake_docker.run({"image": "alpine", "command": "echo 'a b'"})
    assert result.status is S.SUCCEEDED, result.error
    (call,) = fake_docker.calls()
    assert call[0] == "run"
    assert call[1].startswith("--cidfile=")
    assert call[2:] == ["--rm", "alpine", "echo", "a b"]
    assert result.outputs == {
        "stdout": f"ok {' '.join(call)}\n",
        "stderr": "",
        "exit_code": 0,
        "truncated": False,
    }


def test_a_detached_run_reports_the_container_id(fake_docker: FakeDocker) -> None:
    result = fake_docker.run({"image": "nginx", "detach": True, "name": "web"})
    assert result.status is S.SUCCEEDED, result.error
    assert result.outputs["container_id"] == "c0ffee"
    attached = fake_docker.run({"image": "nginx", "command": ["nginx", "--detach"]})
    assert "container_id" not in attached.outputs


def test_a_build_reports_the_image_id(fake_docker: FakeDocker, tmp_path: Path) -> None:
    result = fake_docker.run({"action": "build", "tag": "app:1", "context": str(tmp_path)})
    assert result.status is S.SUCCEEDED, result.error
    assert result.outputs["image_id"] == "sha256:1d"
    (call,) = fake_docker.calls()
    assert call[0] == "build"
    assert call[1].startswith("--iidfile=")
    assert call[2:] == ["--tag=app:1", str(tmp_path)]


def test_a_failing_command_ends_terminal_with_its_outputs(fake_docker: FakeDocker) -> None:
    result = fake_docker.run({"image": "fail"})
    assert result.status is S.TERMINAL
    assert result.error == "DockerTask: docker run exited with code 7: boom: something broke"
    assert result.outputs["stdout"] == "partial\n"
    assert result.outputs["exit_code"] == 7


def test_continue_on_failure_ends_failed_continue(fake_docker: FakeDocker) -> None:
    result = fake_docker.run({"image": "fail", "continue_on_failure": True})
    assert result.status is S.FAILED_CONTINUE
    assert result.outputs["exit_code"] == 7


def test_a_containers_own_daemon_message_is_not_taken_for_ours(fake_docker: FakeDocker) -> None:
    result = fake_docker.run({"image": "dind"})
    assert result.status is S.TERMINAL
    assert (result.error or "").startswith("DockerTask: docker run exited with code 1")


def test_output_is_capped(fake_docker: FakeDocker) -> None:
    result = fake_docker.run({"image": "big", "max_output_size": 1000})
    assert result.status is S.SUCCEEDED, result.error
    assert result.outputs["stdout"] == "x" * 1000
    assert result.outputs["truncated"] is True


def test_secrets_are_masked(fake_docker: FakeDocker) -> None:
    result = fake_docker.run(
        {"image": "secret", "db_password": "hunter2", "secrets": ["db_password"]}
    )
    assert result.outputs["stdout"] == "password is ***\n"
    assert result.outputs["stderr"] == "***\n"


@pytest.mark.parametrize(
    ("remove", "cleanup"), [(True, ["rm", "--force", "c0ffee"]), (False, ["kill", "c0ffee"])]
)
def test_a_timeout_kills_the_cli_and_the_container(
    fake_docker: FakeDocker, remove: bool, cleanup: list[str]
) -> None:
    result = fake_docker.run({"image": "sleepy", "timeout": 0.5, "remove": remove})
    assert result.status is S.TERMINAL
    assert result.error == "DockerTask: docker run timed out after 0.5s and was killed"
    assert fake_docker.calls()[-1] == cleanup


def test_cancellation_kills_the_cli_and_the_container(fake_docker: FakeDocker) -> None:
    token = CancellationToken()
    results: list[TaskResult] = []
    worker = threading.Thread(
        target=lambda: results.append(fake_docker.run({"image": "sleepy"}, token))
    )
    worker.start()
    wait_until((fake_docker.dir / "started").exists, "the stand-in CLI to start")
    token.cancel()
    worker.join(HANG_GUARD)
    assert not worker.is_alive()
    assert results[0].status is S.CANCELED
    assert fake_docker.calls()[-1] == ["rm", "--force", "c0ffee"]


def test_the_engine_cancels_a_running_docker_command(
    fake_docker: FakeDocker, engine: Engine
) -> None:
    engine.registry.register("docker", DockerTask(docker_path=str(fake_docker.path)))
    wf = Workflow.create(
        application="tests", name="docker", stages=[docker_stage("run", {"image": "sleepy"})]
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    wait_until((fake_docker.dir / "started").exists, "the stand-in CLI to start")
    engine.orchestrator.cancel(wf.id, "tester", "enough")
    wait_until(lambda: engine.store.retrieve(wf.id).status.is_complete, "the workflow to end")
    wait_until(
        lambda: ["rm", "--force", "c0ffee"] in fake_docker.calls(), "the container to be removed"
    )
    assert engine.store.retrieve(wf.id).status is S.CANCELED


def test_the_engine_passes_outputs_downstream(fake_docker: FakeDocker, engine: Engine) -> None:
    engine.registry.register("docker", DockerTask(docker_path=str(fake_docker.path)))
    seen: list[Any] = []

    def look_task(stage: StageExecution) -> dict[str, Any]:
        seen.append(stage.context.get("container_id"))
        return {}

    engine.registry.register("look", look_task)
    look = StageExecution(
        ref_id="look",
        type="look",
        name="look",
        requisite_stage_ref_ids={"start"},
        tasks=[TaskExecution.create("look", "look")],
    )
    done = engine.run(docker_stage("start", {"image": "nginx", "detach": True}), look)
    assert done.status is S.SUCCEEDED
    assert seen == ["c0ffee"]


# -- the subprocess runner --------------------------------------------------------------------


def test_the_runner_feeds_stdin() -> None:
    result = run_process(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
        timeout=HANG_GUARD,
        max_output=1000,
        stdin=b"hello\n" * 50000,
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("HELLO\nHELLO\n")
    assert result.truncated is True


def test_the_runner_drains_output_beyond_the_cap_without_blocking() -> None:
    code = (
        "import sys\n"
        "for _ in range(200): sys.stdout.write('y' * 65536)\n"
        "print('e', file=sys.stderr)"
    )
    result = run_process([sys.executable, "-c", code], timeout=HANG_GUARD, max_output=10)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "y" * 10, "e\n")
    assert result.truncated is True


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_the_runner_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 120 & echo $! > {pidfile}; wait"
    result = run_process(["/bin/sh", "-c", script], timeout=0.5, max_output=100)
    assert result.timed_out is True
    assert result.exit_code < 0
    wait_until(pidfile.exists, "the grandchild pid")
    pid = int(pidfile.read_text())
    wait_until(lambda: _gone(pid), "the grandchild to be killed")


def test_the_runner_stops_on_cancellation() -> None:
    token = CancellationToken()
    token.cancel()
    result = run_process(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        timeout=HANG_GUARD * 2,
        max_output=100,
        cancel_token=token,
    )
    assert result.cancelled is True
    assert result.timed_out is False


def test_a_missing_program_raises() -> None:
    with pytest.raises(FileNotFoundError):
        run_process([os.devnull + "-no-such-program"], timeout=1, max_output=10)


# -- issue 13: the privilege opt-ins are the worker's -------------------------------------------


def test_a_workflow_cannot_switch_the_privilege_guard_off(
    engine: Engine, fake_docker: FakeDocker
) -> None:
    engine.registry.register("docker", DockerTask(docker_path=str(fake_docker.path)))
    refused = engine.run(
        docker_stage(
            "escape",
            {"image": "alpine", "privileged": True, "allow_privileged": True},
        )
    )
    assert refused.status is S.TERMINAL
    message = refused.stages[0].tasks[0].task_exception_details["message"]
    assert "context key 'allow_privileged' cannot switch the guard off" in message
    assert 'registry.register("docker", DockerTask(allow_privileged=True))' in message
    assert fake_docker.calls() == []
    # The same worker still runs the next workflow.
    fine = engine.run(docker_stage("ok", {"image": "alpine", "command": "true"}))
    assert fine.status is S.SUCCEEDED
    ((verb, *_),) = fake_docker.calls()
    assert verb == "run"


def test_an_upstream_output_cannot_switch_the_capability_guard_off(
    engine: Engine, fake_docker: FakeDocker
) -> None:
    engine.registry.register("docker", DockerTask(docker_path=str(fake_docker.path)))
    engine.registry.register(
        "leak", lambda stage: TaskResult.success(outputs={"allow_dangerous_capabilities": True})
    )
    upstream = StageExecution(
        ref_id="up",
        type="leak",
        name="up",
        context={},
        tasks=[TaskExecution.create("up.leak", "leak")],
    )
    done = engine.run(
        upstream, docker_stage("down", {"image": "alpine", "cap_add": ["SYS_ADMIN"]}, "up")
    )
    assert done.status is S.TERMINAL
    down = next(s for s in done.stages if s.ref_id == "down")
    assert "allow_dangerous_capabilities" in down.tasks[0].task_exception_details["message"]
    assert fake_docker.calls() == []


def test_the_operator_allows_and_a_stage_narrows(engine: Engine, fake_docker: FakeDocker) -> None:
    engine.registry.register(
        "docker", DockerTask(docker_path=str(fake_docker.path), allow_privileged=True)
    )
    allowed = engine.run(docker_stage("priv", {"image": "alpine", "privileged": True}))
    assert allowed.status is S.SUCCEEDED
    ((_, *args),) = fake_docker.calls()
    assert "--privileged" in args
    narrowed = engine.run(
        docker_stage("narrow", {"image": "alpine", "privileged": True, "allow_privileged": False})
    )
    assert narrowed.status is S.TERMINAL
    message = narrowed.stages[0].tasks[0].task_exception_details["message"]
    assert "context key 'privileged'" in message
    assert len(fake_docker.calls()) == 1
