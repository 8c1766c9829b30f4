"""SSHTask: the ssh command line, key validation and the missing-client error (no ssh run)."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.tasks._context import TaskConfigError
from stabilize.tasks.ssh import SSHTask, plan_ssh

NO_HOST_KEY_CHECK = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
]


def argv(**context: Any) -> list[str]:
    return plan_ssh(context).argv("ssh")


def config_error(**context: Any) -> str:
    with pytest.raises(TaskConfigError) as info:
        plan_ssh(context)
    return str(info.value)


def test_defaults_never_prompt_and_pass_the_command_as_one_argument() -> None:
    assert argv(host="db1", command="uptime; df -h | grep /") == [
        "ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-p",
        "22",
        *NO_HOST_KEY_CHECK,
        "--",
        "db1",
        "uptime; df -h | grep /",
    ]


def test_user_port_key_and_connect_timeout() -> None:
    assert argv(
        host="10.0.0.7", command="id", user="deploy", port=2222, key_file="/k/id", connect_timeout=3
    ) == [
        "ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=3",
        "-p",
        "2222",
        "-i",
        "/k/id",
        "-o",
        "IdentitiesOnly=yes",
        "-l",
        "deploy",
        *NO_HOST_KEY_CHECK,
        "--",
        "10.0.0.7",
        "id",
    ]


def test_user_at_host_is_split() -> None:
    plan = plan_ssh({"host": "deploy@db1", "command": "id"})
    assert (plan.user, plan.host) == ("deploy", "db1")
    assert plan.argv()[8:] == ["-l", "deploy", *NO_HOST_KEY_CHECK, "--", "db1", "id"]


def test_strict_host_key_checks_against_known_hosts() -> None:
    got = argv(host="h", command="id", strict_host_key=True)
    assert got[8:] == ["-o", "StrictHostKeyChecking=yes", "--", "h", "id"]
    got = argv(host="h", command="id", strict_host_key=True, known_hosts_file="/etc/kh")
    assert got[8:] == [
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UserKnownHostsFile=/etc/kh",
        "--",
        "h",
        "id",
    ]


def test_known_hosts_paths_with_spaces_and_percent_are_escaped_for_ssh() -> None:
    got = argv(host="h", command="id", strict_host_key=True, known_hosts_file="/my dir/kh%h")
    assert 'UserKnownHostsFile="/my dir/kh%%h"' in got


def test_braces_in_the_command_are_not_filled_from_the_context() -> None:
    plan = plan_ssh({"host": "h", "command": "echo {host} {user}", "user": "u"})
    assert plan.command == "echo {host} {user}"


def test_limits_and_flags() -> None:
    plan = plan_ssh({"host": "h", "command": "id"})
    assert (plan.timeout, plan.max_output, plan.continue_on_failure) == (60.0, 1048576, False)
    assert plan.retry_on_connection_error is False
    plan = plan_ssh(
        {
            "host": "h",
            "command": "id",
            "timeout": 2.5,
            "max_output_size": 100,
            "continue_on_failure": True,
            "retry_on_connection_error": "true",
        }
    )
    assert (plan.timeout, plan.max_output, plan.continue_on_failure) == (2.5, 100, True)
    assert plan.retry_on_connection_error is True


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"command": "id"}, "context key 'host' is required"),
        ({"host": "h"}, "context key 'command' is required"),
        ({"host": "h", "command": "  "}, "context key 'command' must not be empty"),
        ({"host": "h", "command": ["ls", "-l"]}, "context key 'command' must be a string"),
        ({"host": "-oProxyCommand=x", "command": "id"}, "context key 'host' must not start"),
        ({"host": "a b", "command": "id"}, "context key 'host' must not contain whitespace"),
        ({"host": "h", "user": "-x", "command": "id"}, "context key 'user' must not start"),
        ({"host": "u@h", "user": "v", "command": "id"}, "context key 'host' names a user"),
        ({"host": "h", "command": "id", "port": 0}, "context key 'port' must be at least 1"),
        ({"host": "h", "command": "id", "port": 70000}, "context key 'port' must be at most"),
        ({"host": "h", "command": "id", "port": "22"}, "context key 'port' must be a number"),
        ({"host": "h", "command": "id", "timeout": 0}, "context key 'timeout' must be greater"),
        ({"host": "h", "command": "id", "connect_timeout": 0}, "key 'connect_timeout' must be"),
        ({"host": "h", "command": "id", "strict_host_key": 1}, "'strict_host_key' must be true"),
        ({"host": "h", "command": "id", "known_hosts_file": "/k"}, "'known_hosts_file' is only"),
        ({"host": "h", "command": "id", "max_output_size": -1}, "'max_output_size' must be at"),
        ({"host": "h", "command": "id", "secrets": "pw"}, None),
    ],
)
def test_bad_keys_are_named_in_the_error(context: dict[str, Any], expected: str | None) -> None:
    if expected is None:
        plan_ssh(context)  # `secrets` is read by the task, not the plan
        return
    message = config_error(**context)
    assert message.startswith("SSHTask: ")
    assert expected in message


def stage(**context: Any) -> StageExecution:
    return StageExecution(ref_id="ssh", type="ssh", name="ssh", context=context)


def test_a_missing_ssh_client_fails_terminal_saying_so() -> None:
    result = SSHTask(ssh_path="no-such-ssh-client-x1").execute(stage(host="h", command="id"))
    assert result.status is WorkflowStatus.TERMINAL
    assert result.error == (
        "SSHTask: the ssh client is not installed (no-such-ssh-client-x1 not found on PATH)"
    )


def test_the_ssh_path_key_overrides_the_constructor() -> None:
    result = SSHTask().execute(stage(host="h", command="id", ssh_path="/nonexistent/ssh"))
    assert result.status is WorkflowStatus.TERMINAL
    assert "the ssh client is not installed" in (result.error or "")


def test_bad_secrets_key_is_a_config_error() -> None:
    with pytest.raises(TaskConfigError, match="context key 'secrets' must be a list"):
        SSHTask(ssh_path="no-such-ssh-client-x1").execute(
            stage(host="h", command="id", secrets="pw")
        )
