"""DockerTask: the command line of every action, the guards and the clear errors (no docker run)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.tasks._context import TaskConfigError
from stabilize.tasks.docker import (
    ACTIONS,
    DANGEROUS_CAPABILITIES,
    DockerTask,
    engine_unreachable,
    plan_docker,
)
from stabilize.tasks.registry import TaskRegistry


def argv(**context: Any) -> list[str]:
    return plan_docker(context).argv("docker")


def config_error(**context: Any) -> str:
    with pytest.raises(TaskConfigError) as info:
        plan_docker(context)
    return str(info.value)


# -- run ----------------------------------------------------------------------------------


def test_run_defaults_remove_the_container_and_split_a_string_command() -> None:
    assert argv(image="alpine:3", command="sh -c 'echo hi; exit 3'") == [
        "docker",
        "run",
        "--rm",
        "alpine:3",
        "sh",
        "-c",
        "echo hi; exit 3",
    ]


def test_run_is_the_default_action_and_a_list_command_is_kept_verbatim() -> None:
    assert argv(action="run", image="alpine", command=["echo", "$(id)", "a b"], remove=False) == [
        "docker",
        "run",
        "alpine",
        "echo",
        "$(id)",
        "a b",
    ]


def test_run_with_every_option() -> None:
    got = argv(
        image="registry.example/app:1.2",
        command=["serve", "--port", "80"],
        entrypoint="/bin/entry",
        name="web",
        user="1000:1000",
        hostname="web1",
        volumes=["/data:/data:ro"],
        ports={"80/tcp": 8080},
        network="backend",
        dns=["1.1.1.1", "8.8.8.8"],
        extra_hosts={"db": "10.0.0.5"},
        environment={"MODE": "prod", "DEBUG": False, "WORKERS": 4},
        workdir="/srv",
        memory="512m",
        memory_swap="1g",
        cpus=1.5,
        gpus="all",
        shm_size=67108864,
        cap_add=["NET_BIND_SERVICE"],
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
        remove=True,
        detach=True,
        init=True,
        platform="linux/amd64",
        pull="missing",
        labels={"team": "core"},
        restart="no",
        tmpfs={"/run": "rw,size=64m"},
        ulimit={"nofile": "1024:2048"},
        tty=True,
        interactive=True,
    )
    assert got == [
        "docker",
        "run",
        "--rm",
        "--detach",
        "--interactive",
        "--tty",
        "--init",
        "--read-only",
        "--name=web",
        "--user=1000:1000",
        "--hostname=web1",
        "--workdir=/srv",
        "--network=backend",
        "--platform=linux/amd64",
        "--restart=no",
        "--pull=missing",
        "--memory=512m",
        "--memory-swap=1g",
        "--cpus=1.5",
        "--gpus=all",
        "--shm-size=67108864",
        "--entrypoint=/bin/entry",
        "--dns=1.1.1.1",
        "--dns=8.8.8.8",
        "--add-host=db:10.0.0.5",
        "--env=MODE=prod",
        "--env=DEBUG=false",
        "--env=WORKERS=4",
        "--volume=/data:/data:ro",
        "--publish=8080:80/tcp",
        "--label=team=core",
        "--tmpfs=/run:rw,size=64m",
        "--ulimit=nofile=1024:2048",
        "--cap-add=NET_BIND_SERVICE",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "registry.example/app:1.2",
        "serve",
        "--port",
        "80",
    ]


def test_run_accepts_lists_for_mapping_keys_and_docker_py_volume_mappings() -> None:
    got = argv(
        image="alpine",
        environment=["A=1", "B"],
        ports=["127.0.0.1:8080:80", 9090],
        volumes={"/host": {"bind": "/in", "mode": "ro"}, "/h2": "/in2"},
        labels=["x=y"],
        extra_hosts=["db:10.0.0.5"],
        tmpfs="/tmp",
        ulimit=["nproc=64"],
        cap_add="CHOWN",
        stdin_open=True,
        pull=True,
    )
    assert got == [
        "docker",
        "run",
        "--rm",
        "--interactive",
        "--pull=always",
        "--add-host=db:10.0.0.5",
        "--env=A=1",
        "--env=B",
        "--volume=/host:/in:ro",
        "--volume=/h2:/in2",
        "--publish=127.0.0.1:8080:80",
        "--publish=9090",
        "--label=x=y",
        "--tmpfs=/tmp",
        "--ulimit=nproc=64",
        "--cap-add=CHOWN",
        "alpine",
    ]


def test_a_list_entrypoint_puts_its_arguments_before_the_command() -> None:
    assert argv(image="py", entrypoint=["python", "-u"], command="app.py") == [
        "docker",
        "run",
        "--rm",
        "--entrypoint=python",
        "py",
        "-u",
        "app.py",
    ]


def test_option_values_are_one_argument_so_they_cannot_become_options() -> None:
    got = argv(image="alpine", name="--privileged", workdir="x --volume=/:/host")
    assert "--name=--privileged" in got
    assert "--workdir=x --volume=/:/host" in got
    assert "--privileged" not in got


def test_a_run_records_the_container_id_file_when_given() -> None:
    plan = plan_docker({"image": "alpine", "detach": True})
    assert plan.argv("/usr/bin/docker", cidfile="/tmp/x/cid")[:4] == [
        "/usr/bin/docker",
        "run",
        "--cidfile=/tmp/x/cid",
        "--rm",
    ]


def test_run_keeps_the_timeout_and_output_limits() -> None:
    plan = plan_docker({"image": "alpine"})
    assert (plan.timeout, plan.max_output, plan.continue_on_failure) == (300.0, 1048576, False)
    plan = plan_docker(
        {"image": "alpine", "timeout": 5, "max_output_size": 10, "continue_on_failure": True}
    )
    assert (plan.timeout, plan.max_output, plan.continue_on_failure) == (5.0, 10, True)


# -- the other actions ---------------------------------------------------------------------


def test_exec() -> None:
    assert argv(
        action="exec",
        container="web",
        command="ls -la /srv",
        user="app",
        workdir="/srv",
        environment={"A": "1"},
        tty=True,
        interactive=True,
        detach=True,
    ) == [
        "docker",
        "exec",
        "--detach",
        "--interactive",
        "--tty",
        "--user=app",
        "--workdir=/srv",
        "--env=A=1",
        "web",
        "ls",
        "-la",
        "/srv",
    ]


def test_build() -> None:
    assert argv(
        action="build",
        tag=["app:1", "app:latest"],
        context="./svc",
        dockerfile="docker/Dockerfile",
        build_args={"VERSION": "1.2", "DEBUG": True},
        no_cache=True,
    ) == [
        "docker",
        "build",
        "--tag=app:1",
        "--tag=app:latest",
        "--file=docker/Dockerfile",
        "--build-arg=VERSION=1.2",
        "--build-arg=DEBUG=true",
        "--no-cache",
        "./svc",
    ]


def test_build_defaults_to_the_current_directory_and_records_the_image_id_file() -> None:
    plan = plan_docker({"action": "build", "tag": "app"})
    assert plan.argv("docker", iidfile="/t/iid") == [
        "docker",
        "build",
        "--iidfile=/t/iid",
        "--tag=app",
        ".",
    ]


def test_pull() -> None:
    assert argv(action="pull", image="alpine:3") == ["docker", "pull", "alpine:3"]
    assert argv(action="pull", image="alpine", platform="linux/arm64") == [
        "docker",
        "pull",
        "--platform=linux/arm64",
        "alpine",
    ]


def test_ps_and_images() -> None:
    assert argv(action="ps") == ["docker", "ps"]
    assert argv(action="ps", all=True) == ["docker", "ps", "--all"]
    assert argv(action="images") == ["docker", "images"]
    assert argv(action="images", all="true") == ["docker", "images", "--all"]


def test_logs() -> None:
    assert argv(action="logs", container="web") == ["docker", "logs", "web"]
    assert argv(action="logs", container="web", tail=100, follow=True) == [
        "docker",
        "logs",
        "--tail=100",
        "--follow",
        "web",
    ]
    assert argv(action="logs", container="web", tail="all") == [
        "docker",
        "logs",
        "--tail=all",
        "web",
    ]


def test_stop_and_rm() -> None:
    assert argv(action="stop", container="web") == ["docker", "stop", "web"]
    assert argv(action="stop", container=["a", "b"], force=True) == [
        "docker",
        "stop",
        "--time=0",
        "a",
        "b",
    ]
    assert argv(action="rm", container="web") == ["docker", "rm", "web"]
    assert argv(action="rm", container="web", force=True) == ["docker", "rm", "--force", "web"]


# -- validation and guards -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({}, "context key 'image' is required"),
        ({"action": "deploy"}, "context key 'action' must be one of"),
        ({"action": "exec", "command": "ls"}, "context key 'container' is required"),
        ({"action": "exec", "container": "web"}, "context key 'command' is required for exec"),
        ({"action": "logs"}, "context key 'container' is required"),
        ({"action": "stop"}, "context key 'container' is required"),
        ({"action": "rm", "container": []}, "context key 'container' is required"),
        ({"action": "pull"}, "context key 'image' is required"),
        ({"image": 3}, "context key 'image' must be a string"),
        ({"image": "--privileged"}, "context key 'image' must not start with '-'"),
        ({"action": "rm", "container": "-f"}, "context key 'container' must not start with '-'"),
        ({"action": "build", "context": "--foo"}, "context key 'context' must not start"),
        ({"image": "alpine", "command": "echo 'open"}, "context key 'command' cannot be split"),
        ({"image": "alpine", "command": {"a": 1}}, "context key 'command' must be a string or"),
        ({"image": "alpine", "timeout": 0}, "context key 'timeout' must be greater than 0"),
        ({"image": "alpine", "timeout": "10"}, "context key 'timeout' must be a number"),
        ({"image": "alpine", "remove": "yes"}, "context key 'remove' must be true or false"),
        ({"image": "alpine", "environment": 5}, "context key 'environment' must be a list"),
        ({"image": "alpine", "environment": {"A": [1]}}, "context key 'environment' must map"),
        ({"image": "alpine", "ports": "80"}, "context key 'ports' must be a list"),
        ({"image": "alpine", "volumes": {"/h": 1}}, "context key 'volumes' entry '/h'"),
        ({"image": "alpine", "memory": True}, "context key 'memory' must be a string or a number"),
        ({"image": "alpine", "pull": "sometimes"}, "context key 'pull' must be one of"),
        ({"image": "alpine", "max_output_size": -1}, "context key 'max_output_size' must be at"),
        ({"action": "logs", "container": "w", "tail": "ten"}, "context key 'tail' must be a num"),
        ({"image": "alpine", "entrypoint": []}, "context key 'entrypoint' must not be empty"),
    ],
)
def test_bad_keys_are_named_in_the_error(context: dict[str, Any], expected: str) -> None:
    message = config_error(**context)
    assert message.startswith("DockerTask: ")
    assert expected in message


PRIVILEGED_SPELLING = 'registry.register("docker", DockerTask(allow_privileged=True))'
CAPABILITIES_SPELLING = 'registry.register("docker", DockerTask(allow_dangerous_capabilities=True))'


def test_privileged_needs_the_workers_allow_privileged() -> None:
    message = config_error(image="alpine", privileged=True)
    assert "context key 'privileged'" in message
    assert PRIVILEGED_SPELLING in message
    plan = plan_docker({"image": "alpine", "privileged": True}, allow_privileged=True)
    assert "--privileged" in plan.argv("docker")


def test_privileged_exec_needs_the_workers_allow_privileged_too() -> None:
    message = config_error(action="exec", container="c", command="id", privileged=True)
    assert PRIVILEGED_SPELLING in message
    context = {"action": "exec", "container": "c", "command": "id", "privileged": True}
    assert plan_docker(context, allow_privileged=True).argv("docker") == [
        "docker",
        "exec",
        "--privileged",
        "c",
        "id",
    ]


@pytest.mark.parametrize(
    "cap", ["SYS_ADMIN", "sys_admin", "CAP_SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "ALL"]
)
def test_dangerous_capabilities_need_the_workers_opt_in(cap: str) -> None:
    message = config_error(image="alpine", cap_add=["CHOWN", cap])
    assert "context key 'cap_add'" in message
    assert CAPABILITIES_SPELLING in message
    context = {"image": "alpine", "cap_add": ["CHOWN", cap]}
    plan = plan_docker(context, allow_dangerous_capabilities=True)
    assert f"--cap-add={cap}" in plan.argv("docker")


def test_the_dangerous_list_covers_the_usual_escapes() -> None:
    assert {"SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE", "ALL", "DAC_READ_SEARCH"} <= (
        DANGEROUS_CAPABILITIES
    )


def test_harmless_capabilities_need_no_opt_in() -> None:
    assert "--cap-add=NET_BIND_SERVICE" in argv(image="alpine", cap_add="NET_BIND_SERVICE")


def test_unconfined_security_options_need_the_workers_allow_privileged() -> None:
    message = config_error(image="alpine", security_opt=["seccomp=unconfined"])
    assert "context key 'security_opt'" in message
    assert PRIVILEGED_SPELLING in message
    context = {"image": "alpine", "security_opt": ["seccomp=unconfined"]}
    plan = plan_docker(context, allow_privileged=True)
    assert "--security-opt=seccomp=unconfined" in plan.argv("docker")


# -- issue 13: the opt-ins are the worker's, a stage context can only narrow them ----------

OPT_INS = {
    "allow_privileged": PRIVILEGED_SPELLING,
    "allow_dangerous_capabilities": (CAPABILITIES_SPELLING),
}


@given(
    key=st.sampled_from(sorted(OPT_INS)),
    value=st.sampled_from([True, "true", "TRUE", "True"]),
    action=st.sampled_from(ACTIONS),
)
@settings(max_examples=100, deadline=None)
@example(key="allow_privileged", value=True, action="run")
def test_a_context_cannot_switch_a_guard_off(key: str, value: Any, action: str) -> None:
    # Refused whatever the action and whether or not the stage asks for privileges.
    context = {"action": action, "image": "alpine", "container": "c", "command": "id", key: value}
    message = config_error(**context)
    assert message.startswith(f"DockerTask: context key {key!r} cannot switch the guard off")
    assert OPT_INS[key] in message
    assert "remove the key from the stage context" in message


def test_a_context_true_is_accepted_when_the_worker_allows_it() -> None:
    context = {
        "image": "alpine",
        "privileged": True,
        "allow_privileged": True,
        "cap_add": ["SYS_ADMIN"],
        "allow_dangerous_capabilities": True,
    }
    plan = plan_docker(context, allow_privileged=True, allow_dangerous_capabilities=True)
    assert {"--privileged", "--cap-add=SYS_ADMIN"} <= set(plan.argv("docker"))


def test_a_context_false_narrows_an_allowing_worker() -> None:
    with pytest.raises(TaskConfigError, match="context key 'privileged'"):
        plan_docker(
            {"image": "alpine", "privileged": True, "allow_privileged": False},
            allow_privileged=True,
        )
    with pytest.raises(TaskConfigError, match="context key 'security_opt'"):
        plan_docker(
            {"image": "alpine", "security_opt": "label=disable", "allow_privileged": "false"},
            allow_privileged=True,
        )
    with pytest.raises(TaskConfigError, match="context key 'cap_add'"):
        plan_docker(
            {"image": "alpine", "cap_add": "SYS_ADMIN", "allow_dangerous_capabilities": False},
            allow_dangerous_capabilities=True,
        )


def test_an_allowing_worker_still_refuses_a_malformed_opt_in() -> None:
    with pytest.raises(TaskConfigError, match="'allow_privileged' must be true or false"):
        plan_docker({"image": "alpine", "allow_privileged": "yes"}, allow_privileged=True)


def test_an_allowing_instance_answers_only_the_names_it_is_registered_under() -> None:
    registry = TaskRegistry()
    allowing = DockerTask(allow_privileged=True, allow_dangerous_capabilities=True)
    assert allowing.aliases == []
    registry.register("privileged_docker", allowing)
    assert registry.get("privileged_docker") is allowing
    default = registry.get("docker")
    assert isinstance(default, DockerTask)
    assert not default.allow_privileged
    assert not default.allow_dangerous_capabilities


def test_dropping_capabilities_is_always_allowed() -> None:
    assert "--cap-drop=SYS_ADMIN" in argv(image="alpine", cap_drop=["SYS_ADMIN"])


# -- the task's clear errors ------------------------------------------------------------------


def stage(**context: Any) -> StageExecution:
    return StageExecution(ref_id="docker", type="docker", name="docker", context=context)


def test_a_missing_docker_cli_fails_terminal_saying_so() -> None:
    result = DockerTask(docker_path="no-such-docker-cli-x1").execute(stage(image="alpine"))
    assert result.status is WorkflowStatus.TERMINAL
    assert result.error == (
        "DockerTask: the docker CLI is not installed (no-such-docker-cli-x1 not found on PATH)"
    )


def test_the_docker_path_key_overrides_the_constructor() -> None:
    result = DockerTask().execute(stage(image="alpine", docker_path="/nonexistent/docker"))
    assert result.status is WorkflowStatus.TERMINAL
    assert "the docker CLI is not installed (/nonexistent/docker not found on PATH)" in (
        result.error or ""
    )


def test_bad_keys_fail_before_looking_for_the_cli() -> None:
    with pytest.raises(TaskConfigError, match="context key 'image' is required"):
        DockerTask(docker_path="no-such-docker-cli-x1").execute(stage(action="run"))


def test_engine_unreachable_is_recognised_from_the_cli_stderr() -> None:
    assert engine_unreachable(
        "docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?"
    )
    assert engine_unreachable("error during connect: Get http://%2F%2F.%2Fpipe: open failed")
    assert not engine_unreachable("Error response from daemon: No such container: web")


def test_a_context_opt_in_fails_the_task_before_looking_for_the_cli() -> None:
    with pytest.raises(TaskConfigError) as info:
        DockerTask(docker_path="no-such-docker-cli-x1").execute(
            stage(image="alpine", privileged=True, allow_privileged=True)
        )
    assert PRIVILEGED_SPELLING in str(info.value)
