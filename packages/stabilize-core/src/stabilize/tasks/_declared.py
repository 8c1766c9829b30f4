"""What each built-in task reads from its stage context and writes to its outputs.

One declarative table, read by ``stabilize prompt`` (and kept true by a test that finds each
key in the modules of its task): the guides in ``docs/tasks/`` explain each key; this table
only names them, with their defaults as text, so that the generated reference cannot drift
from the code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContextKey:
    """One context key a built-in task reads.

    Attributes:
        name: The key.
        default: The default as text: ``"required"`` (or ``"required for ..."``), a value
            such as ``"60"``, or ``""`` when an absent key means the feature is off.
    """

    name: str
    default: str = ""


@dataclass(frozen=True)
class TaskKeys:
    """The context keys and outputs of one built-in task type.

    Attributes:
        task: The type name the registry knows it by (``"shell"``).
        cls: Where its class lives, ``"module:Class"``.
        modules: The modules whose code reads the keys and writes the outputs.
        context: The context keys it reads (its configuration).
        outputs: The output keys it may write.
    """

    task: str
    cls: str
    modules: tuple[str, ...]
    context: tuple[ContextKey, ...]
    outputs: tuple[str, ...]


BUILTIN_TASK_KEYS: tuple[TaskKeys, ...] = (
    TaskKeys(
        task="shell",
        cls="stabilize.tasks.shell:ShellTask",
        modules=(
            "stabilize.tasks.shell",
            "stabilize.tasks._context",
            "stabilize.tasks._placeholders",
            "stabilize.tasks._process",
            "stabilize.tasks._process_task",
        ),
        context=(
            ContextKey("command", "required"),
            ContextKey("shell", "true for strings"),
            ContextKey("cwd", "the worker's directory"),
            ContextKey("env", "{}"),
            ContextKey("inherit_env", "true"),
            ContextKey("stdin", ""),
            ContextKey("timeout", "60"),
            ContextKey("expected_codes", "[0]"),
            ContextKey("max_output_size", "10485760"),
            ContextKey("secrets", "[]"),
            ContextKey("binary", "false"),
            ContextKey("continue_on_failure", "false"),
            ContextKey("restart_on_failure", "false"),
        ),
        outputs=("stdout", "stderr", "returncode", "truncated", "stdout_b64"),
    ),
    TaskKeys(
        task="http",
        cls="stabilize.tasks.http:HTTPTask",
        modules=("stabilize.tasks.http._config", "stabilize.tasks.http._task"),
        context=(
            ContextKey("url", "required"),
            ContextKey("method", '"GET"'),
            ContextKey("headers", "{}"),
            ContextKey("query", "{}"),
            ContextKey("json", ""),
            ContextKey("body", ""),
            ContextKey("form", ""),
            ContextKey("auth", ""),
            ContextKey("bearer_token", ""),
            ContextKey("upload_file", ""),
            ContextKey("upload_field", '"file"'),
            ContextKey("upload_filename", "the file's name"),
            ContextKey("upload_form", "{}"),
            ContextKey("download_to", ""),
            ContextKey("expected_status", "any 2xx"),
            ContextKey("parse_json", "false"),
            ContextKey("max_response_size", "10485760"),
            ContextKey("timeout", "30"),
            ContextKey("retries", "0"),
            ContextKey("retry_delay", "1.0"),
            ContextKey("retry_on_status", "[502, 503, 504]"),
            ContextKey("retry_non_idempotent", "false"),
            ContextKey("continue_on_failure", "false"),
            ContextKey("verify_ssl", "true"),
            ContextKey("allow_private_urls", "the worker's setting"),
            ContextKey("secrets", "[]"),
        ),
        outputs=(
            "status_code",
            "headers",
            "body",
            "body_json",
            "elapsed_ms",
            "url",
            "content_type",
            "content_length",
        ),
    ),
    TaskKeys(
        task="python",
        cls="stabilize.tasks.python_task:PythonTask",
        modules=(
            "stabilize.tasks.python_task",
            "stabilize.tasks._context",
            "stabilize.tasks._process",
            "stabilize.tasks._process_task",
        ),
        context=(
            ContextKey("callable", ""),
            ContextKey("call_with", '"stage"'),
            ContextKey("script", ""),
            ContextKey("script_file", ""),
            ContextKey("module", ""),
            ContextKey("function", ""),
            ContextKey("inputs", "{}"),
            ContextKey("args", "[]"),
            ContextKey("python_path", "sys.executable"),
            ContextKey("timeout", "60"),
            ContextKey("cwd", "the worker's directory"),
            ContextKey("env", "{}"),
            ContextKey("inherit_env", "true"),
            ContextKey("max_output_size", "10485760"),
            ContextKey("secrets", "[]"),
            ContextKey("continue_on_failure", "false"),
            ContextKey("restart_on_failure", "false"),
        ),
        outputs=("stdout", "stderr", "exit_code", "result", "truncated"),
    ),
    TaskKeys(
        task="docker",
        cls="stabilize.tasks.docker:DockerTask",
        modules=(
            "stabilize.tasks.docker",
            "stabilize.tasks._context",
            "stabilize.tasks._process",
            "stabilize.tasks._process_task",
        ),
        context=(
            ContextKey("action", '"run"'),
            ContextKey("timeout", "300"),
            ContextKey("max_output_size", "1048576"),
            ContextKey("continue_on_failure", "false"),
            ContextKey("secrets", "[]"),
            ContextKey("docker_path", '"docker"'),
            ContextKey("image", "required for run, pull"),
            ContextKey("command", "required for exec"),
            ContextKey("entrypoint", ""),
            ContextKey("name", ""),
            ContextKey("user", ""),
            ContextKey("hostname", ""),
            ContextKey("workdir", ""),
            ContextKey("environment", ""),
            ContextKey("volumes", ""),
            ContextKey("ports", ""),
            ContextKey("network", ""),
            ContextKey("dns", ""),
            ContextKey("extra_hosts", ""),
            ContextKey("memory", ""),
            ContextKey("memory_swap", ""),
            ContextKey("cpus", ""),
            ContextKey("gpus", ""),
            ContextKey("shm_size", ""),
            ContextKey("privileged", "false"),
            ContextKey("allow_privileged", "the worker's setting"),
            ContextKey("cap_add", ""),
            ContextKey("allow_dangerous_capabilities", "the worker's setting"),
            ContextKey("cap_drop", ""),
            ContextKey("security_opt", ""),
            ContextKey("read_only", "false"),
            ContextKey("remove", "true"),
            ContextKey("detach", "false"),
            ContextKey("init", "false"),
            ContextKey("platform", ""),
            ContextKey("pull", ""),
            ContextKey("labels", ""),
            ContextKey("restart", ""),
            ContextKey("tmpfs", ""),
            ContextKey("ulimit", ""),
            ContextKey("tty", "false"),
            ContextKey("interactive", "false"),
            ContextKey("stdin_open", "false"),
            ContextKey("container", "required for exec, logs, stop, rm"),
            ContextKey("all", "false"),
            ContextKey("tail", ""),
            ContextKey("follow", "false"),
            ContextKey("force", "false"),
            ContextKey("context", '"."'),
            ContextKey("tag", ""),
            ContextKey("dockerfile", ""),
            ContextKey("build_args", ""),
            ContextKey("no_cache", "false"),
        ),
        outputs=("stdout", "stderr", "exit_code", "truncated", "container_id", "image_id"),
    ),
    TaskKeys(
        task="ssh",
        cls="stabilize.tasks.ssh:SSHTask",
        modules=(
            "stabilize.tasks.ssh",
            "stabilize.tasks._context",
            "stabilize.tasks._process",
            "stabilize.tasks._process_task",
        ),
        context=(
            ContextKey("host", "required"),
            ContextKey("command", "required"),
            ContextKey("user", "ssh's choice"),
            ContextKey("port", "22"),
            ContextKey("key_file", ""),
            ContextKey("timeout", "60"),
            ContextKey("connect_timeout", "10"),
            ContextKey("strict_host_key", "false"),
            ContextKey("known_hosts_file", "ssh's default"),
            ContextKey("max_output_size", "1048576"),
            ContextKey("continue_on_failure", "false"),
            ContextKey("retry_on_connection_error", "false"),
            ContextKey("secrets", "[]"),
            ContextKey("ssh_path", '"ssh"'),
        ),
        outputs=("stdout", "stderr", "exit_code", "host", "user", "truncated"),
    ),
    TaskKeys(
        task="noop",
        cls="stabilize.tasks:NoOpTask",
        modules=("stabilize.tasks.interface",),
        context=(),
        outputs=(),
    ),
    TaskKeys(
        task="wait",
        cls="stabilize.tasks:WaitTask",
        modules=("stabilize.tasks.interface",),
        context=(
            ContextKey("waitTime", "0"),
            ContextKey("waitUntil", ""),
        ),
        outputs=(),
    ),
    TaskKeys(
        task="wait_for_signal",
        cls="stabilize.tasks.interface:SignalWaitTask",
        modules=("stabilize.tasks.interface",),
        context=(),
        outputs=("signal", "signal_data", "signal_user"),
    ),
    TaskKeys(
        task="sub_workflow",
        cls="stabilize.tasks.sub_workflow:SubWorkflowTask",
        modules=("stabilize.tasks.sub_workflow",),
        context=(
            ContextKey("_sub_workflow_config", "required"),
            ContextKey("_sub_workflow_timeout_seconds", ""),
            ContextKey("_sub_workflow_poll_seconds", "0.5"),
            ContextKey("_max_recursion_depth", "10"),
        ),
        outputs=("sub_workflow_id", "sub_workflow_status", "sub_workflow_outputs"),
    ),
)
"""Every built-in task type of :class:`~stabilize.tasks.TaskRegistry` but ``loop``, whose
keys the structured loops (:mod:`stabilize.loops`) set."""
