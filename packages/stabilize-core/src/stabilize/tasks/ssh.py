"""``SSHTask``: run one command on a remote host with the ``ssh`` client.

The local side never involves a shell: ``ssh`` is started from an argument list, with
``BatchMode=yes`` (it never prompts), and the remote command is passed as a single
argument after ``--``. The remote sshd runs that string through the remote user's login
shell, as ssh always does, so the command is shell code *on the remote side*; this task
therefore does not fill ``{key}`` placeholders into it (a context value pasted into
shell code could run as a command). See ``docs/tasks/ssh.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stabilize.errors import TransientError
from stabilize.models.stage import StageExecution
from stabilize.tasks._context import ContextReader, secret_values
from stabilize.tasks._process import find_executable
from stabilize.tasks._process_task import ProcessTask, cannot_start, failure, masked_streams, tail
from stabilize.tasks.result import TaskResult

TASK = "SSHTask"

DEFAULT_PORT = 22
DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_MAX_OUTPUT = 1024 * 1024

CONNECTION_ERROR = 255
"""ssh's exit status when it failed itself (connection, authentication, host key)."""


@dataclass(frozen=True)
class SSHPlan:
    """A validated ssh invocation."""

    host: str
    user: str | None
    port: int
    command: str
    options: list[str]
    timeout: float
    max_output: int
    continue_on_failure: bool
    retry_on_connection_error: bool

    def argv(self, ssh: str = "ssh") -> list[str]:
        """The full command line: options, ``--``, the host, the remote command."""
        return [ssh, *self.options, "--", self.host, self.command]


def _name(reader: ContextReader, key: str, value: str) -> str:
    """A host or user name: not empty, no whitespace, not starting with '-'."""
    if not value:
        raise reader.error(key, "must not be empty")
    if value.startswith("-"):
        raise reader.error(
            key, f"must not start with '-' (it would be read as an option): {value!r}"
        )
    if any(c.isspace() or c == "\0" for c in value):
        raise reader.error(key, f"must not contain whitespace: {value!r}")
    return value


def _config_path(reader: ContextReader, key: str, value: str) -> str:
    """A path inside an ``-o Option=value`` argument (ssh splits those on spaces)."""
    if not value:
        raise reader.error(key, "must not be empty")
    if '"' in value or any(c in value for c in "\0\n\r"):
        raise reader.error(key, "must not contain double quotes or line breaks")
    value = value.replace("%", "%%")  # ssh expands %-tokens in these paths
    return f'"{value}"' if any(c.isspace() for c in value) else value


def plan_ssh(context: Mapping[str, Any]) -> SSHPlan:
    """Validate an SSHTask stage context and build its command line.

    Raises:
        TaskConfigError: a key is missing or has the wrong type or value.
    """
    reader = ContextReader(context, TASK)
    host = _name(reader, "host", reader.text("host"))
    command = reader.text("command")
    if not command.strip():
        raise reader.error("command", "must not be empty")
    if "\0" in command:
        raise reader.error("command", "must not contain NUL characters")
    user = reader.text("user", None)
    if "@" in host:
        if user is not None:
            raise reader.error("host", f"names a user ({host!r}) and so does 'user'; use one")
        user, host = host.rsplit("@", 1)
        host = _name(reader, "host", host)
    if user is not None:
        user = _name(reader, "user", user)
    port = int(reader.number("port", DEFAULT_PORT, minimum=1, integer=True))
    if port > 65535:
        raise reader.error("port", f"must be at most 65535, not {port}")
    timeout = float(reader.number("timeout", DEFAULT_TIMEOUT))
    if timeout <= 0:
        raise reader.error("timeout", f"must be greater than 0, not {timeout:g}")
    connect_timeout = int(
        reader.number("connect_timeout", DEFAULT_CONNECT_TIMEOUT, minimum=1, integer=True)
    )
    max_output = int(reader.number("max_output_size", DEFAULT_MAX_OUTPUT, minimum=0, integer=True))
    strict = reader.flag("strict_host_key", False)

    options = [
        "-T",  # no pseudo-terminal
        "-o", "BatchMode=yes",  # never prompt for a password or passphrase
        "-o", f"ConnectTimeout={connect_timeout}",
        "-p", str(port),
    ]  # fmt: skip
    key_file = reader.text("key_file", None)
    if key_file is not None:
        if not key_file:
            raise reader.error("key_file", "must not be empty")
        options += ["-i", key_file, "-o", "IdentitiesOnly=yes"]
    if user is not None:
        options += ["-l", user]
    known_hosts = reader.text("known_hosts_file", None)
    if strict:
        options += ["-o", "StrictHostKeyChecking=yes"]
        if known_hosts is not None:
            path = _config_path(reader, "known_hosts_file", known_hosts)
            options += ["-o", f"UserKnownHostsFile={path}"]
    else:
        if known_hosts is not None:
            raise reader.error(
                "known_hosts_file", "is only used with strict_host_key: true (it is false)"
            )
        options += [
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",  # no "Permanently added ... to known hosts" noise
        ]  # fmt: skip
    return SSHPlan(
        host=host,
        user=user,
        port=port,
        command=command,
        options=options,
        timeout=timeout,
        max_output=max_output,
        continue_on_failure=reader.flag("continue_on_failure", False),
        retry_on_connection_error=reader.flag("retry_on_connection_error", False),
    )


class SSHTask(ProcessTask):
    """Run ``command`` on ``host`` over ssh.

    Args:
        ssh_path: The ssh executable (a name looked up on ``PATH`` or a path); the
            ``ssh_path`` context key overrides it. Default ``"ssh"``.

    Attributes:
        kill_grace: Seconds between SIGTERM and SIGKILL when the local ssh's group is stopped.
    """

    def __init__(self, ssh_path: str | None = None) -> None:
        self.ssh_path = ssh_path or "ssh"

    def execute(self, stage: StageExecution) -> TaskResult:
        """Validate the keys, run the command remotely and report its outputs.

        Args:
            stage: The stage; its context holds ``host``, ``command`` and the other keys.

        Returns:
            A success with the command's outputs, or a failure naming the exit code (or
            saying the ssh client is missing).

        Raises:
            TaskConfigError: A context key is missing or malformed, naming it.
            TransientError: ssh could not connect or authenticate and
                ``retry_on_connection_error`` is set.
        """
        reader = ContextReader(stage.context, TASK)
        secrets = secret_values(reader)
        plan = plan_ssh(stage.context)
        name = reader.text("ssh_path", self.ssh_path)
        ssh = find_executable(name)
        if ssh is None:
            return TaskResult.terminal(
                f"{TASK}: the ssh client is not installed ({name} not found on PATH)"
            )
        try:
            result = self.run(
                stage, plan.argv(ssh), timeout=plan.timeout, max_output=plan.max_output
            )
        except OSError as exc:
            return cannot_start(TASK, ssh, exc)
        stdout, stderr = masked_streams(result, secrets)
        outputs: dict[str, Any] = {
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": result.exit_code,
            "host": plan.host,
            "user": plan.user,
            "truncated": result.truncated,
        }
        where = f"{plan.user}@{plan.host}" if plan.user else plan.host
        where = f"{where}:{plan.port}"
        if result.cancelled:
            return TaskResult.canceled(outputs)
        if result.timed_out:
            return failure(
                f"{TASK}: the command on {where} timed out after {plan.timeout:g}s; "
                "the local ssh process was killed",
                outputs,
            )
        if result.exit_code == 0:
            return TaskResult.success(outputs=outputs)
        if result.exit_code == CONNECTION_ERROR:
            message = (
                f"{TASK}: ssh could not connect to {where} or failed to authenticate "
                f"(exit {CONNECTION_ERROR}): {tail(stderr) or '(no stderr)'}"
            )
            if plan.retry_on_connection_error:
                raise TransientError(message)
            return failure(message, outputs)
        message = (
            f"{TASK}: the command on {where} exited with code {result.exit_code}: "
            f"{tail(stderr) or '(no stderr)'}"
        )
        return failure(message, outputs, plan.continue_on_failure)


__all__ = ["SSHPlan", "SSHTask", "plan_ssh"]
