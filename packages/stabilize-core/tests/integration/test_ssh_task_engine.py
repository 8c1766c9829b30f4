"""SSHTask against a real, private sshd on 127.0.0.1 (and through the engine).

The fixture starts its own sshd (never the system one) on a free port with a fresh host
key and client key pair, and kills it at teardown. It skips with a message when sshd,
ssh or ssh-keygen are missing (``.ci/run`` installs openssh-server when it can).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
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
from stabilize.errors import TransientError
from stabilize.queue.processor.config import QueueProcessorConfig
from stabilize.tasks.ssh import SSHTask

S = WorkflowStatus

HANG_GUARD = 30.0
"""Seconds a condition may take before a test gives up (guards hangs only)."""


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; the deadline only guards against hangs."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class SshServer:
    """A running private sshd and the keys to reach it."""

    port: int
    user: str
    key_file: Path
    wrong_key_file: Path
    host_public_key: str
    dir: Path

    def context(self, command: str, **extra: Any) -> dict[str, Any]:
        """A stage context that reaches this server."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "key_file": str(self.key_file),
            "connect_timeout": 10,
            "command": command,
            **extra,
        }


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install openssh-server openssh-client)")
    return found


def _keygen(keygen: str, path: Path) -> None:
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "stabilize-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    """A private sshd on 127.0.0.1 that accepts one generated client key."""
    sshd_bin = _tool("sshd")
    _tool("ssh")
    keygen = _tool("ssh-keygen")
    try:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    except PermissionError:
        pytest.skip("sshd needs /run/sshd, which this user cannot create")
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host", "client", "wrong"):
        _keygen(keygen, d / name)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    user = getpass.getuser()
    proc: subprocess.Popen[bytes] | None = None
    port = 0
    log = d / "sshd.log"
    for _ in range(5):  # another process may grab the free port first: try a new one
        port = _free_port()
        config = d / "sshd_config"
        config.write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {d / 'host'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowUsers {user}\n"
            "StrictModes no\n"
            f"PidFile {d / 'sshd.pid'}\n"
            "UsePAM no\n"
        )
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sshd_bin, "-D", "-f", str(config), "-e"], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + HANG_GUARD
        while proc.poll() is None and not _accepts(port):
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"sshd did not listen on {port}: {log.read_text()}")
            time.sleep(0.02)
        if proc.poll() is None:
            break
        proc = None
    if proc is None:
        pytest.fail(f"sshd would not start: {log.read_text()}")
    try:
        yield SshServer(
            port=port,
            user=user,
            key_file=d / "client",
            wrong_key_file=d / "wrong",
            host_public_key=(d / "host.pub").read_text().strip(),
            dir=d,
        )
    finally:
        proc.kill()
        proc.wait()


def stage(context: dict[str, Any], token: CancellationToken | None = None) -> StageExecution:
    s = StageExecution(ref_id="remote", type="ssh", name="remote", context=context)
    s._cancel_token = token
    return s


def run(context: dict[str, Any]) -> Any:
    return SSHTask().execute(stage(context))


# -- the task on its own ------------------------------------------------------------------


def test_runs_a_command_and_captures_stdout_stderr_and_exit_code(sshd: SshServer) -> None:
    result = run(sshd.context("echo out; echo err >&2"))
    assert result.status is S.SUCCEEDED, result.error
    assert result.outputs == {
        "stdout": "out\n",
        "stderr": "err\n",
        "exit_code": 0,
        "host": "127.0.0.1",
        "user": sshd.user,
        "truncated": False,
    }


def test_a_non_zero_exit_fails_terminal_with_the_outputs(sshd: SshServer) -> None:
    result = run(sshd.context("echo partial; echo broken >&2; exit 3"))
    assert result.status is S.TERMINAL
    assert result.outputs["exit_code"] == 3
    assert result.outputs["stdout"] == "partial\n"
    assert "exited with code 3" in result.error
    assert "broken" in result.error


def test_continue_on_failure_ends_failed_continue(sshd: SshServer) -> None:
    result = run(sshd.context("exit 4", continue_on_failure=True))
    assert result.status is S.FAILED_CONTINUE
    assert result.outputs["exit_code"] == 4


def test_shell_metacharacters_reach_the_remote_shell_as_one_command(sshd: SshServer) -> None:
    command = "printf '%s\\n' 'a;b' \"$((1 + 2))\" | cat && echo \"$(echo sub)\""
    result = run(sshd.context(command))
    assert result.status is S.SUCCEEDED, result.error
    assert result.outputs["stdout"] == "a;b\n3\nsub\n"


def test_braces_are_not_filled_from_the_context(sshd: SshServer) -> None:
    result = run(sshd.context("echo '{host}' '{marker}'", marker="$(touch /tmp/nope)"))
    assert result.status is S.SUCCEEDED, result.error
    assert result.outputs["stdout"] == "{host} {marker}\n"


def test_secrets_are_masked_in_outputs_and_errors(sshd: SshServer) -> None:
    ctx = sshd.context(
        "echo token=s3cr3t-value; echo s3cr3t-value >&2; exit 1",
        api_token="s3cr3t-value",
        secrets=["api_token"],
    )
    result = run(ctx)
    assert result.status is S.TERMINAL
    assert result.outputs["stdout"] == "token=***\n"
    assert result.outputs["stderr"] == "***\n"
    assert "s3cr3t-value" not in (result.error or "")


def test_output_is_capped(sshd: SshServer) -> None:
    result = run(sshd.context("head -c 5000 /dev/zero | tr '\\0' a", max_output_size=100))
    assert result.status is S.SUCCEEDED, result.error
    assert result.outputs["stdout"] == "a" * 100
    assert result.outputs["truncated"] is True


def _ssh_processes(marker: str) -> list[int]:
    """Local ssh processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and os.path.basename(cmdline[0]) == b"ssh"
            and marker.encode() in b" ".join(cmdline)
        ):
            found.append(int(entry.name))
    return found


def test_the_timeout_kills_the_local_ssh(sshd: SshServer) -> None:
    marker = f"timeout-{sshd.port}"
    # A loop that writes: it ends by itself (SIGPIPE) once the connection is gone.
    result = run(sshd.context(f"while :; do echo {marker}; sleep 0.1; done", timeout=1))
    assert result.status is S.TERMINAL
    assert "timed out after 1s" in result.error
    assert "local ssh process was killed" in result.error
    assert _ssh_processes(marker) == []


def test_cancellation_kills_the_local_ssh(sshd: SshServer) -> None:
    started = sshd.dir / "started"
    marker = f"cancel-{sshd.port}"
    token = CancellationToken()
    results: list[Any] = []
    command = f"touch {started}; while :; do echo {marker}; sleep 0.1; done"
    worker = threading.Thread(
        target=lambda: results.append(SSHTask().execute(stage(sshd.context(command), token)))
    )
    worker.start()
    wait_until(started.exists, "the remote command to start")
    assert _ssh_processes(marker) != []
    token.cancel()
    worker.join(HANG_GUARD)
    assert not worker.is_alive()
    assert results[0].status is S.CANCELED
    assert _ssh_processes(marker) == []


def test_a_wrong_key_is_a_clear_connection_error(sshd: SshServer) -> None:
    result = run(sshd.context("echo hi", key_file=str(sshd.wrong_key_file)))
    assert result.status is S.TERMINAL
    assert result.outputs["exit_code"] == 255
    assert f"ssh could not connect to {sshd.user}@127.0.0.1:{sshd.port}" in result.error
    assert "Permission denied (publickey)" in result.error


def test_a_refused_connection_can_be_retried(sshd: SshServer) -> None:
    closed = _free_port()
    ctx = sshd.context("echo hi", port=closed)
    result = run(ctx)
    assert result.status is S.TERMINAL
    assert "Connection refused" in result.error
    with pytest.raises(TransientError, match="Connection refused"):
        run({**ctx, "retry_on_connection_error": True})


def test_strict_host_key_checking_with_a_known_hosts_file(sshd: SshServer) -> None:
    known = sshd.dir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}\n")
    ctx = sshd.context("echo trusted", strict_host_key=True, known_hosts_file=str(known))
    result = run(ctx)
    assert result.status is S.SUCCEEDED, result.error
    assert result.outputs["stdout"] == "trusted\n"

    unknown = sshd.dir / "empty_known_hosts"
    unknown.write_text("")
    result = run({**ctx, "known_hosts_file": str(unknown)})
    assert result.status is S.TERMINAL
    assert "Host key verification failed" in result.error


# -- through the engine --------------------------------------------------------------------


@dataclass
class Engine:
    """A real engine on a fresh SQLite file with ``ssh`` registered."""

    store: SqliteWorkflowStore
    processor: QueueProcessor
    orchestrator: Orchestrator

    def run(self, wf: Workflow) -> Workflow:
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
    registry = TaskRegistry()
    registry.register("ssh", SSHTask)
    processor = QueueProcessor(
        queue,
        store=store,
        task_registry=registry,
        config=QueueProcessorConfig(poll_frequency_ms=10, cancel_check_interval_seconds=0.05),
    )
    yield Engine(store, processor, Orchestrator(queue, store=store))
    processor.stop(wait=True, timeout=10)


def ssh_stage(ref: str, context: dict[str, Any], requires: tuple[str, ...] = ()) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="ssh",
        name=ref,
        context=context,
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(f"{ref}.ssh", "ssh")],
    )


def test_the_engine_runs_ssh_stages_and_stores_their_outputs(
    sshd: SshServer, engine: Engine
) -> None:
    wf = Workflow.create(
        application="tests",
        name="ssh",
        stages=[
            ssh_stage("first", sshd.context("echo one")),
            ssh_stage("second", sshd.context("echo two >&2; exit 0"), requires=("first",)),
        ],
    )
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED
    stages = {s.ref_id: s for s in done.stages}
    assert stages["first"].outputs["stdout"] == "one\n"
    assert stages["second"].outputs["stderr"] == "two\n"
    assert stages["second"].outputs["exit_code"] == 0


def test_the_engine_fails_the_workflow_on_a_connection_error(
    sshd: SshServer, engine: Engine
) -> None:
    ctx = sshd.context("echo hi", key_file=str(sshd.wrong_key_file))
    wf = Workflow.create(application="tests", name="ssh", stages=[ssh_stage("remote", ctx)])
    done = engine.run(wf)
    assert done.status is S.TERMINAL
    (remote,) = done.stages
    assert remote.status is S.TERMINAL
    assert remote.outputs["exit_code"] == 255
    details = remote.tasks[0].task_exception_details
    assert "Permission denied (publickey)" in details["message"]


def test_the_engine_cancels_a_running_ssh_command(sshd: SshServer, engine: Engine) -> None:
    started = sshd.dir / "started"
    marker = f"engine-cancel-{sshd.port}"
    command = f"touch {started}; while :; do echo {marker}; sleep 0.1; done"
    wf = Workflow.create(
        application="tests",
        name="ssh",
        stages=[ssh_stage("remote", sshd.context(command, timeout=HANG_GUARD * 2))],
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    wait_until(started.exists, "the remote command to start")
    engine.orchestrator.cancel(wf.id, "tester", "enough")
    wait_until(lambda: engine.store.retrieve(wf.id).status.is_complete, "the workflow to end")
    wait_until(lambda: _ssh_processes(marker) == [], "the local ssh to be killed")
    assert engine.store.retrieve(wf.id).status is S.CANCELED
