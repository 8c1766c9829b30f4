"""``DockerTask``: drive the ``docker`` CLI (run, exec, build, pull, ps, images, logs, stop, rm).

The command line is built as an argument list (never a shell), every option value is
passed as one ``--option=value`` argument, and positional values (image, container,
build context) may not start with ``-``, so no context value can turn into a docker
option. ``privileged``, unconfined security options and dangerous capabilities need an
opt-in from the worker's operator (``DockerTask(allow_privileged=True)``,
``DockerTask(allow_dangerous_capabilities=True)``); a stage context can only narrow it.
See ``docs/tasks/docker.md`` for every key and output.
"""

from __future__ import annotations

import contextlib
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabilize.models.stage import StageExecution
from stabilize.tasks._context import ContextReader, secret_values
from stabilize.tasks._process import ProcessResult, find_executable, run_process
from stabilize.tasks._process_task import ProcessTask, cannot_start, failure, masked_streams, tail
from stabilize.tasks.result import TaskResult

TASK = "DockerTask"

ACTIONS = ("run", "exec", "build", "pull", "ps", "images", "logs", "stop", "rm")

DEFAULT_TIMEOUT = 300.0
DEFAULT_MAX_OUTPUT = 1024 * 1024

DANGEROUS_CAPABILITIES = frozenset(
    {
        "ALL",
        "SYS_ADMIN",
        "SYS_MODULE",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_BOOT",
        "SYS_TIME",
        "NET_ADMIN",
        "DAC_READ_SEARCH",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "BPF",
        "PERFMON",
        "SYSLOG",
        "LINUX_IMMUTABLE",
    }
)
"""Capabilities that break container isolation; ``cap_add`` needs the worker's
``DockerTask(allow_dangerous_capabilities=True)`` for any of them."""

UNCONFINED_SECURITY_OPTS = frozenset(
    {
        "seccomp=unconfined",
        "seccomp:unconfined",
        "apparmor=unconfined",
        "apparmor:unconfined",
        "label=disable",
        "label:disable",
        "systempaths=unconfined",
    }
)
"""``security_opt`` values that switch confinement off; they need the worker's
``DockerTask(allow_privileged=True)``."""

ENABLE_PRIVILEGED = 'registry.register("docker", DockerTask(allow_privileged=True))'
"""How a worker's operator lets docker stages run privileged or unconfined (a stage cannot)."""

ENABLE_CAPABILITIES = 'registry.register("docker", DockerTask(allow_dangerous_capabilities=True))'
"""How a worker's operator lets docker stages add dangerous capabilities (a stage cannot)."""

_OPERATOR_ONLY = "only the worker's operator can allow it, with"

ENGINE_UNREACHABLE_MARKERS = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
    "failed to connect to the docker api",
    "permission denied while trying to connect to the docker",
)
"""Fragments of the CLI's stderr when it cannot talk to a Docker engine."""

_DOCKER_OWN_ERROR = 125
"""``docker run`` exits 125 when docker itself failed (not the container)."""


@dataclass(frozen=True)
class DockerPlan:
    """A validated docker invocation: the arguments after the executable, and limits.

    ``cidfile``/``iidfile`` are filled in by :meth:`argv` when given, so the task can
    read the container and image ids the CLI writes there.
    """

    action: str
    args: list[str]
    timeout: float
    max_output: int
    continue_on_failure: bool
    remove: bool
    detach: bool

    def argv(
        self, docker: str = "docker", *, cidfile: str | None = None, iidfile: str | None = None
    ) -> list[str]:
        """The full command line."""
        args = list(self.args)
        if self.action == "run" and cidfile is not None:
            args.insert(1, f"--cidfile={cidfile}")
        if self.action == "build" and iidfile is not None:
            args.insert(1, f"--iidfile={iidfile}")
        return [docker, *args]


# -- reading values --------------------------------------------------------------------


def _positional(reader: ContextReader, key: str, value: str) -> str:
    if not value.strip():
        raise reader.error(key, "must not be empty")
    if value.startswith("-"):
        raise reader.error(
            key, f"must not start with '-' (it would be read as an option): {value!r}"
        )
    if any(c in value for c in "\0\n\r"):
        raise reader.error(key, "must not contain NUL or line breaks")
    return value


def _scalar(reader: ContextReader, key: str) -> str | None:
    """A string or a number, as text (``memory: 512m`` or ``cpus: 1.5``)."""
    value = reader.raw(key, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise reader.error(key, f"must be a string or a number, not {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise reader.error(key, "must not be empty")
    return text


def _strings(reader: ContextReader, key: str) -> list[str]:
    """One string or a list of strings."""
    value = reader.raw(key, None)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(reader.text_list(key))


def _pairs(reader: ContextReader, key: str, sep: str) -> list[str]:
    """A mapping (``{"A": "1"}`` -> ``A=1``) or a list of already joined strings."""
    value = reader.raw(key, None)
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [f"{k}{sep}{v}" for k, v in reader.text_map(key).items()]
    return _strings(reader, key)


def _ports(reader: ContextReader) -> list[str]:
    """``["8080:80"]``, or a mapping container port -> host port (docker-py style)."""
    value = reader.raw("ports", None)
    if value is None:
        return []
    if isinstance(value, Mapping):
        out = []
        for container, host in value.items():
            if isinstance(host, bool) or not isinstance(host, str | int):
                raise reader.error(
                    "ports", f"must map container ports to host ports; {container!r} does not"
                )
            out.append(f"{host}:{container}")
        return out
    if isinstance(value, list | tuple) and all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in value
    ):
        return [str(v) for v in value]
    raise reader.error("ports", "must be a list of 'host:container' strings or a mapping")


def _volumes(reader: ContextReader) -> list[str]:
    """``["/host:/data:ro"]``, or a mapping (docker-py style).

    The mapping goes from host path to container path or to ``{"bind": path, "mode": "ro"}``.
    """
    value = reader.raw("volumes", None)
    if value is None:
        return []
    if isinstance(value, Mapping):
        out = []
        for host, target in value.items():
            if isinstance(target, str):
                out.append(f"{host}:{target}")
            elif isinstance(target, Mapping) and isinstance(target.get("bind"), str):
                mode = target.get("mode")
                out.append(f"{host}:{target['bind']}" + (f":{mode}" if mode else ""))
            else:
                raise reader.error(
                    "volumes", f"entry {host!r} must be a path or {{'bind': path, 'mode': 'ro'}}"
                )
        return out
    return _strings(reader, "volumes")


def _command(reader: ContextReader, key: str = "command") -> list[str]:
    """A string (split like a POSIX shell would, but never run by one) or a list."""
    value = reader.raw(key, None)
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise reader.error(key, f"cannot be split into arguments: {exc}") from None
    if isinstance(value, list | tuple) and all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
    ):
        return [str(v) for v in value]
    raise reader.error(key, "must be a string or a list of strings")


def _capability(name: str) -> str:
    upper = name.strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper


def _allowed(reader: ContextReader, key: str, worker: bool, enable: str) -> bool:
    """The worker's setting, narrowed by the context key ``key``.

    Issue 13: whoever writes a workflow must not be able to switch a guard off, so ``true``
    in the context on a worker that does not allow it is refused, naming the operator's
    spelling; ``false`` turns an allowing worker's setting off for this stage.
    """
    if not reader.has(key):
        return worker
    wanted = reader.flag(key, False)
    if wanted and not worker:
        raise reader.error(
            key,
            f"cannot switch the guard off: {_OPERATOR_ONLY} {enable}; "
            "remove the key from the stage context",
        )
    return wanted


def _guards(reader: ContextReader, *, privileged: bool, capabilities: bool) -> None:
    if reader.flag("privileged", False) and not privileged:
        raise reader.error(
            "privileged",
            "is true, which gives the container full access to the host; "
            f"{_OPERATOR_ONLY} {ENABLE_PRIVILEGED}",
        )
    dangerous = sorted(
        {_capability(c) for c in _strings(reader, "cap_add")} & DANGEROUS_CAPABILITIES
    )
    if dangerous and not capabilities:
        raise reader.error(
            "cap_add",
            f"adds dangerous capabilities {dangerous}; "
            f"only the worker's operator can allow them, with {ENABLE_CAPABILITIES}",
        )
    unconfined = [
        o for o in _strings(reader, "security_opt") if o.strip().lower() in UNCONFINED_SECURITY_OPTS
    ]
    if unconfined and not privileged:
        raise reader.error(
            "security_opt",
            f"switches confinement off ({', '.join(unconfined)}); "
            f"{_OPERATOR_ONLY} {ENABLE_PRIVILEGED}",
        )


def _opt(args: list[str], name: str, value: str | None) -> None:
    if value is not None:
        args.append(f"--{name}={value}")


def _opts(args: list[str], name: str, values: list[str]) -> None:
    args.extend(f"--{name}={v}" for v in values)


def _flag(
    args: list[str], reader: ContextReader, key: str, option: str, default: bool = False
) -> None:
    if reader.flag(key, default):
        args.append(option)


def _containers(reader: ContextReader) -> list[str]:
    names = _strings(reader, "container")
    if not names:
        raise reader.error("container", "is required")
    return [_positional(reader, "container", n) for n in names]


# -- the command line for each action -------------------------------------------------


def _run_args(reader: ContextReader) -> list[str]:
    image = _positional(reader, "image", reader.text("image"))
    args = ["run"]
    _flag(args, reader, "remove", "--rm", default=True)
    _flag(args, reader, "detach", "--detach")
    if reader.flag("interactive", False) or reader.flag("stdin_open", False):
        args.append("--interactive")
    _flag(args, reader, "tty", "--tty")
    _flag(args, reader, "init", "--init")
    _flag(args, reader, "privileged", "--privileged")
    _flag(args, reader, "read_only", "--read-only")
    for key, option in (
        ("name", "name"),
        ("user", "user"),
        ("hostname", "hostname"),
        ("workdir", "workdir"),
        ("network", "network"),
        ("platform", "platform"),
        ("restart", "restart"),
    ):
        _opt(args, option, reader.text(key, None))
    pull = reader.raw("pull", None)
    if isinstance(pull, bool):
        _opt(args, "pull", "always" if pull else None)
    elif pull is not None:
        _opt(args, "pull", reader.choice("pull", ("always", "missing", "never")))
    for key, option in (
        ("memory", "memory"),
        ("memory_swap", "memory-swap"),
        ("cpus", "cpus"),
        ("gpus", "gpus"),
        ("shm_size", "shm-size"),
    ):
        _opt(args, option, _scalar(reader, key))
    command = _command(reader)
    entrypoint = reader.raw("entrypoint", None)
    if entrypoint is not None:
        # --entrypoint takes only the program; further list items go before the command.
        parts = [entrypoint] if isinstance(entrypoint, str) else _command(reader, "entrypoint")
        if not parts:
            raise reader.error("entrypoint", "must not be empty")
        _opt(args, "entrypoint", parts[0])
        command = [*parts[1:], *command]
    _opts(args, "dns", _strings(reader, "dns"))
    _opts(args, "add-host", _pairs(reader, "extra_hosts", ":"))
    _opts(args, "env", _pairs(reader, "environment", "="))
    _opts(args, "volume", _volumes(reader))
    _opts(args, "publish", _ports(reader))
    _opts(args, "label", _pairs(reader, "labels", "="))
    _opts(args, "tmpfs", _pairs(reader, "tmpfs", ":"))
    _opts(args, "ulimit", _pairs(reader, "ulimit", "="))
    _opts(args, "cap-add", _strings(reader, "cap_add"))
    _opts(args, "cap-drop", _strings(reader, "cap_drop"))
    _opts(args, "security-opt", _strings(reader, "security_opt"))
    return [*args, image, *command]


def _exec_args(reader: ContextReader) -> list[str]:
    (container, *more) = _containers(reader)
    if more:
        raise reader.error("container", "must name one container for exec")
    command = _command(reader)
    if not command:
        raise reader.error("command", "is required for exec")
    args = ["exec"]
    _flag(args, reader, "detach", "--detach")
    if reader.flag("interactive", False) or reader.flag("stdin_open", False):
        args.append("--interactive")
    _flag(args, reader, "tty", "--tty")
    _flag(args, reader, "privileged", "--privileged")
    _opt(args, "user", reader.text("user", None))
    _opt(args, "workdir", reader.text("workdir", None))
    _opts(args, "env", _pairs(reader, "environment", "="))
    return [*args, container, *command]


def _build_args(reader: ContextReader) -> list[str]:
    context = _positional(reader, "context", reader.text("context", "."))
    args = ["build"]
    _opts(args, "tag", [_positional(reader, "tag", t) for t in _strings(reader, "tag")])
    _opt(args, "file", reader.text("dockerfile", None))
    _opts(args, "build-arg", _pairs(reader, "build_args", "="))
    _flag(args, reader, "no_cache", "--no-cache")
    _opt(args, "platform", reader.text("platform", None))
    return [*args, context]


def _logs_args(reader: ContextReader) -> list[str]:
    (container, *more) = _containers(reader)
    if more:
        raise reader.error("container", "must name one container for logs")
    args = ["logs"]
    tail_value = reader.raw("tail", None)
    if tail_value is not None:
        if isinstance(tail_value, str) and tail_value == "all":
            _opt(args, "tail", "all")
        else:
            _opt(args, "tail", str(reader.number("tail", minimum=0, integer=True)))
    _flag(args, reader, "follow", "--follow")
    return [*args, container]


def _args(reader: ContextReader, action: str) -> list[str]:
    if action == "run":
        return _run_args(reader)
    if action == "exec":
        return _exec_args(reader)
    if action == "build":
        return _build_args(reader)
    if action == "pull":
        image = _positional(reader, "image", reader.text("image"))
        args = ["pull"]
        _opt(args, "platform", reader.text("platform", None))
        return [*args, image]
    if action in ("ps", "images"):
        return [action, "--all"] if reader.flag("all", False) else [action]
    if action == "logs":
        return _logs_args(reader)
    if action == "stop":
        # docker stop has no --force: "force" stops at once (SIGKILL without a grace period).
        return [
            "stop",
            *(["--time=0"] if reader.flag("force", False) else []),
            *_containers(reader),
        ]
    assert action == "rm"
    return ["rm", *(["--force"] if reader.flag("force", False) else []), *_containers(reader)]


def plan_docker(
    context: Mapping[str, Any],
    *,
    allow_privileged: bool = False,
    allow_dangerous_capabilities: bool = False,
) -> DockerPlan:
    """Validate a DockerTask stage context and build its command line.

    Args:
        context: The stage context.
        allow_privileged: The worker's setting: ``privileged`` and unconfined
            ``security_opt`` values are allowed.
        allow_dangerous_capabilities: The worker's setting: ``cap_add`` may name
            :data:`DANGEROUS_CAPABILITIES`.

    Raises:
        TaskConfigError: a key is missing or wrong, or a guard refused the request.
    """
    reader = ContextReader(context, TASK)
    action = reader.choice("action", ACTIONS, "run")
    timeout = float(reader.number("timeout", DEFAULT_TIMEOUT))
    if timeout <= 0:
        raise reader.error("timeout", f"must be greater than 0, not {timeout:g}")
    max_output = int(reader.number("max_output_size", DEFAULT_MAX_OUTPUT, minimum=0, integer=True))
    continue_on_failure = reader.flag("continue_on_failure", False)
    privileged = _allowed(reader, "allow_privileged", allow_privileged, ENABLE_PRIVILEGED)
    capabilities = _allowed(
        reader, "allow_dangerous_capabilities", allow_dangerous_capabilities, ENABLE_CAPABILITIES
    )
    if action in ("run", "exec"):
        _guards(reader, privileged=privileged, capabilities=capabilities)
    args = _args(reader, action)
    remove = action == "run" and reader.flag("remove", True)
    detach = action == "run" and reader.flag("detach", False)
    return DockerPlan(action, args, timeout, max_output, continue_on_failure, remove, detach)


def engine_unreachable(stderr: str) -> bool:
    """True when the CLI's stderr says it could not reach a Docker engine."""
    lowered = stderr.lower()
    return any(marker in lowered for marker in ENGINE_UNREACHABLE_MARKERS)


# -- the task -----------------------------------------------------------------------------


class DockerTask(ProcessTask):
    """Run one docker CLI command from the stage context.

    Args:
        docker_path: The docker executable (a name looked up on ``PATH`` or a path);
            the ``docker_path`` context key overrides it. Default ``"docker"``.
        allow_privileged: Let stages run ``privileged`` containers and switch confinement
            off with ``security_opt`` (``seccomp=unconfined`` and the like). This is the
            worker operator's decision, made where the task is registered
            (``registry.register("docker", DockerTask(allow_privileged=True))``); a stage
            context may only turn it back off for itself with ``allow_privileged: false``.
        allow_dangerous_capabilities: Let ``cap_add`` name
            :data:`DANGEROUS_CAPABILITIES`; the operator's decision too, which a stage
            context may only narrow with ``allow_dangerous_capabilities: false``.

    Attributes:
        kill_grace: Seconds between SIGTERM and SIGKILL when the CLI's group is stopped.
    """

    def __init__(
        self,
        docker_path: str | None = None,
        *,
        allow_privileged: bool = False,
        allow_dangerous_capabilities: bool = False,
    ) -> None:
        self.docker_path = docker_path or "docker"
        self.allow_privileged = allow_privileged
        self.allow_dangerous_capabilities = allow_dangerous_capabilities

    def execute(self, stage: StageExecution) -> TaskResult:
        """Validate the keys, run the command and report its outputs.

        Args:
            stage: The stage; its context holds ``action`` and the other keys.

        Returns:
            A success with the command's outputs, or a failure naming the exit code (or
            saying the docker CLI is missing).

        Raises:
            TaskConfigError: A context key is missing or malformed, naming it.
        """
        reader = ContextReader(stage.context, TASK)
        secrets = secret_values(reader)
        plan = plan_docker(
            stage.context,
            allow_privileged=self.allow_privileged,
            allow_dangerous_capabilities=self.allow_dangerous_capabilities,
        )
        name = reader.text("docker_path", self.docker_path)
        docker = find_executable(name)
        if docker is None:
            return TaskResult.terminal(
                f"{TASK}: the docker CLI is not installed ({name} not found on PATH)"
            )
        with tempfile.TemporaryDirectory(prefix="stabilize-docker-") as tmp:
            cidfile = str(Path(tmp) / "container.id")
            iidfile = str(Path(tmp) / "image.id")
            argv = plan.argv(docker, cidfile=cidfile, iidfile=iidfile)
            try:
                result = self.run(stage, argv, timeout=plan.timeout, max_output=plan.max_output)
            except OSError as exc:
                return cannot_start(TASK, docker, exc)
            container_id = _read_id(cidfile)
            image_id = _read_id(iidfile)
            if (result.timed_out or result.cancelled) and container_id:
                # Killing the CLI leaves the container running: stop it too.
                _stop_container(docker, container_id, remove=plan.remove)
        return _result(plan, result, secrets, container_id=container_id, image_id=image_id)


def _read_id(path: str) -> str | None:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def _stop_container(docker: str, container_id: str, *, remove: bool) -> None:
    argv = [docker, "rm", "--force", container_id] if remove else [docker, "kill", container_id]
    with contextlib.suppress(OSError):
        run_process(argv, timeout=30, max_output=4096)


def _result(
    plan: DockerPlan,
    result: ProcessResult,
    secrets: list[str],
    *,
    container_id: str | None,
    image_id: str | None,
) -> TaskResult:
    stdout, stderr = masked_streams(result, secrets)
    outputs: dict[str, Any] = {
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": result.exit_code,
        "truncated": result.truncated,
    }
    if plan.detach:
        outputs["container_id"] = container_id or stdout.strip() or None
    if plan.action == "build":
        outputs["image_id"] = image_id
    what = f"{TASK}: docker {plan.action}"
    if result.cancelled:
        return TaskResult.canceled(outputs)
    if result.timed_out:
        return failure(f"{what} timed out after {plan.timeout:g}s and was killed", outputs)
    if result.exit_code == 0:
        return TaskResult.success(outputs=outputs)
    own_error = plan.action != "run" or result.exit_code == _DOCKER_OWN_ERROR
    if own_error and engine_unreachable(stderr):
        return failure(
            f"{TASK}: the Docker engine is not reachable (the docker CLI could not connect "
            f"to a Docker daemon; is one running, and do DOCKER_HOST / the docker context "
            f"point at it?): {tail(stderr)}",
            outputs,
        )
    message = f"{what} exited with code {result.exit_code}: {tail(stderr) or '(no stderr)'}"
    return failure(message, outputs, plan.continue_on_failure)


__all__ = [
    "ACTIONS",
    "DANGEROUS_CAPABILITIES",
    "ENABLE_CAPABILITIES",
    "ENABLE_PRIVILEGED",
    "DockerPlan",
    "DockerTask",
    "engine_unreachable",
    "plan_docker",
]
