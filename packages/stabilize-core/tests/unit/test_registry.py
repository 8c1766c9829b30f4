"""TaskRegistry: registration forms, lookups, aliases, duplicates, built-ins (tasks/registry.py)."""

from __future__ import annotations

import inspect
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stabilize import Workflow, WorkflowEngine
from stabilize.errors import TaskNotFoundError
from stabilize.models import StageExecution, WorkflowStatus
from stabilize.tasks import CallableTask, NoOpTask, Task, TaskRegistry, TaskResult, WaitTask

S = WorkflowStatus


class Hello(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success({"hello": stage.ref_id})


class Aliased(Task):
    aliases = ["aka", "also"]

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success()


class AliasedInstance(Task):
    @property
    def aliases(self) -> list[str]:
        return ["inst-alias"]

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success()


def a_stage() -> StageExecution:
    return StageExecution(ref_id="s1", context={"n": 2})


@pytest.fixture(autouse=True)
def no_plugins(fake_plugins: Any) -> None:
    """No installed plugin can answer a lookup in these tests."""


def test_class_gives_a_new_instance_per_get() -> None:
    registry = TaskRegistry()
    registry.register("hello", Hello)
    first, second = registry.get("hello"), registry.get("hello")
    assert isinstance(first, Hello)
    assert isinstance(second, Hello)
    assert first is not second


def test_register_a_class_alone_uses_its_name() -> None:
    registry = TaskRegistry()
    registry.register(Hello)
    assert isinstance(registry.get("Hello"), Hello)
    registry.register_class(Aliased)
    assert isinstance(registry.get("Aliased"), Aliased)


def test_instance_is_shared() -> None:
    registry = TaskRegistry()
    task = Hello()
    registry.register("hello", task)
    assert registry.get("hello") is task
    assert registry.get("hello") is task


def test_plain_function_is_wrapped_and_gets_the_stage() -> None:
    registry = TaskRegistry()
    seen: list[StageExecution] = []

    def double(stage: StageExecution) -> dict[str, Any]:
        seen.append(stage)
        return {"double": stage.context["n"] * 2}

    registry.register("double", double)
    task = registry.get("double")
    assert isinstance(task, CallableTask)
    assert task.name == "double"
    stage = a_stage()
    result = task.execute(stage)
    assert isinstance(result, TaskResult)
    assert result.status is S.SUCCEEDED
    assert result.outputs == {"double": 4}
    assert seen == [stage]


def test_function_returning_none_is_refused_naming_the_function() -> None:
    # Issue 15: a forgotten return used to count as a success without outputs.
    registry = TaskRegistry()
    registry.register("none", lambda stage: None)
    with pytest.raises(TypeError) as caught:
        registry.get("none").execute(a_stage())
    message = str(caught.value)
    assert message.startswith("task function 'none' returned None (no return statement?)")
    assert "return TaskResult.success() or {} to succeed without outputs" in message


def test_named_function_returning_none_is_named_with_its_registration() -> None:
    registry = TaskRegistry()

    def forgot(stage: StageExecution) -> None:
        stage.context["done"] = True

    registry.register("step", forgot)
    with pytest.raises(TypeError, match=r"^task function forgot\(\) \(registered as 'step'\)"):
        registry.get("step").execute(a_stage())


def test_empty_dict_is_a_success_without_outputs() -> None:
    registry = TaskRegistry()
    registry.register("empty", lambda stage: {})
    result = registry.get("empty").execute(a_stage())
    assert isinstance(result, TaskResult)
    assert (result.status, result.outputs, result.context) == (S.SUCCEEDED, {}, {})


def test_function_returning_a_task_result_passes_it_through() -> None:
    registry = TaskRegistry()
    wanted = TaskResult.terminal("no")
    registry.register("fail", lambda stage: wanted)
    assert registry.get("fail").execute(a_stage()) is wanted


def test_function_returning_the_wrong_type_raises_a_clear_type_error() -> None:
    registry = TaskRegistry()

    def bad(stage: StageExecution) -> int:
        return 42

    registry.register("bad", bad)
    with pytest.raises(
        TypeError, match=r"task function 'bad' returned int; expected a TaskResult or a dict"
    ):
        registry.get("bad").execute(a_stage())


async def test_async_function_is_wrapped_as_an_async_task() -> None:
    registry = TaskRegistry()

    async def fetch(stage: StageExecution) -> dict[str, Any]:
        return {"ref": stage.ref_id}

    registry.register("fetch", fetch)
    task = registry.get("fetch")
    assert isinstance(task, CallableTask)
    assert inspect.iscoroutinefunction(task.execute)
    pending = task.execute(a_stage())
    assert inspect.isawaitable(pending)
    result = await pending
    assert isinstance(result, TaskResult)
    assert result.outputs == {"ref": "s1"}


async def test_async_function_wrong_type_raises() -> None:
    registry = TaskRegistry()

    async def bad(stage: StageExecution) -> str:
        return "nope"

    registry.register("bad", bad)
    pending = registry.get("bad").execute(a_stage())
    assert inspect.isawaitable(pending)
    with pytest.raises(TypeError, match="returned str"):
        await pending


def test_zero_argument_factory_is_called_for_each_get() -> None:
    registry = TaskRegistry()
    registry.register("made", lambda: Hello())
    first, second = registry.get("made"), registry.get("made")
    assert isinstance(first, Hello)
    assert first is not second


def test_factory_returning_a_non_task_raises() -> None:
    registry = TaskRegistry()
    registry.register("made", lambda: 5)
    with pytest.raises(TypeError, match="task factory 'made' returned int, not a Task"):
        registry.get("made")


def test_aliases_given_at_registration() -> None:
    registry = TaskRegistry()
    registry.register("hello", Hello, aliases=["hi", "hey"])
    for name in ("hello", "hi", "hey"):
        assert isinstance(registry.get(name), Hello)
    assert {"hello", "hi", "hey"} <= set(registry.names())


def test_aliases_declared_on_the_class_and_the_instance() -> None:
    registry = TaskRegistry()
    registry.register("aliased", Aliased)
    assert isinstance(registry.get("aka"), Aliased)
    assert isinstance(registry.get("also"), Aliased)
    instance = AliasedInstance()
    registry.register("inst", instance)
    assert registry.get("inst-alias") is instance


def test_decorator_registers_and_returns_the_source() -> None:
    registry = TaskRegistry()

    @registry.task("greet", aliases=["g"])
    def greet(stage: StageExecution) -> None:
        return None

    assert callable(greet)
    assert isinstance(registry.get("greet"), CallableTask)
    assert isinstance(registry.get("g"), CallableTask)


def test_strict_duplicate_raises() -> None:
    registry = TaskRegistry()
    registry.register("hello", Hello)
    with pytest.raises(ValueError, match="task 'hello' is already registered"):
        registry.register("hello", NoOpTask, strict=True)
    assert isinstance(registry.get("hello"), Hello)


def test_strict_duplicate_alias_raises() -> None:
    registry = TaskRegistry()
    registry.register("hello", Hello, aliases=["hi"])
    with pytest.raises(ValueError, match="task 'hi' is already registered"):
        registry.register("other", NoOpTask, aliases=["hi"], strict=True)


def test_duplicate_warns_and_replaces() -> None:
    registry = TaskRegistry()
    registry.register("hello", Hello)
    with pytest.warns(UserWarning, match="task 'hello' re-registered"):
        registry.register("hello", NoOpTask)
    assert isinstance(registry.get("hello"), NoOpTask)


def test_registering_the_same_source_again_is_silent() -> None:
    registry = TaskRegistry()
    task = Hello()
    registry.register("hello", task)
    registry.register("hello", task)  # warnings are errors in this suite
    registry.register("h2", Hello)
    registry.register("h2", Hello, strict=True)
    assert registry.get("hello") is task


def test_registration_refuses_bad_names_and_sources() -> None:
    registry = TaskRegistry()
    with pytest.raises(ValueError, match="non-empty string"):
        registry.register("", Hello)

    class NotATask:
        pass

    with pytest.raises(TypeError, match=r"class NotATask does not subclass stabilize\.Task"):
        registry.register("x", NotATask)
    with pytest.raises(TypeError, match="expected a Task class, instance or callable"):
        registry.register("x", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="task is required"):
        registry.register("x")
    assert "x" not in registry


def test_builtins() -> None:
    registry = TaskRegistry()
    assert isinstance(registry.get("noop"), NoOpTask)
    assert isinstance(registry.get("wait"), WaitTask)
    assert registry.names() == [
        "SubWorkflowTask",
        "docker",
        "http",
        "loop",
        "noop",
        "python",
        "shell",
        "ssh",
        "sub_workflow",
        "wait",
        "wait_for_signal",
    ]
    assert registry.has("noop")
    assert "wait" in registry
    result = registry.get("noop").execute(a_stage())
    assert isinstance(result, TaskResult)
    assert result.status is S.SUCCEEDED


def test_explicit_registration_shadows_a_builtin() -> None:
    registry = TaskRegistry()
    registry.register("noop", Hello)  # built-ins are not entries: no warning
    assert isinstance(registry.get("noop"), Hello)


def test_wait_builtin_with_no_wait_time_succeeds_at_once() -> None:
    result = WaitTask().execute(StageExecution(ref_id="w", context={"waitTime": 0}))
    assert result.status is S.SUCCEEDED


def test_unknown_name_lists_the_registered_names() -> None:
    registry = TaskRegistry()
    registry.register("zeta", Hello)
    registry.register("alpha", NoOpTask)
    with pytest.raises(TaskNotFoundError) as info:
        registry.get("missing")
    assert str(info.value) == (
        "no task registered as 'missing' (registered: SubWorkflowTask, alpha, docker, http, "
        "loop, noop, python, shell, ssh, sub_workflow, wait, wait_for_signal, zeta)"
    )
    assert isinstance(info.value, KeyError)
    assert not registry.has("missing")
    assert "missing" not in registry
    assert 3 not in registry


def test_get_by_class() -> None:
    registry = TaskRegistry()
    instance = Hello()
    registry.register("hello", instance)
    registry.register("aliased", Aliased)
    assert registry.get_by_class(Hello) is instance
    assert isinstance(registry.get_by_class(Aliased), Aliased)
    with pytest.raises(TaskNotFoundError, match="no task of class WaitTask"):
        registry.get_by_class(WaitTask)


# -- which built-ins a registry offers (builtins=...) -----------------------------------

BUILTIN_NAMES = TaskRegistry().names()
PROCESS_TASKS = ("shell", "python", "docker", "ssh")


def test_no_builtins_offers_only_what_is_registered() -> None:
    registry = TaskRegistry(builtins=False)
    registry.register("hello", Hello)

    assert registry.names() == ["hello"]
    assert isinstance(registry.get("hello"), Hello)
    for name in BUILTIN_NAMES:
        assert not registry.has(name)
        assert name not in registry
    with pytest.raises(TaskNotFoundError) as info:
        registry.get("shell")
    assert str(info.value) == "no task registered as 'shell' (registered: hello)"


def test_some_builtins_offers_those_and_what_is_registered() -> None:
    registry = TaskRegistry(builtins=["noop", "wait"])
    registry.register("hello", Hello)

    assert registry.names() == ["hello", "noop", "wait"]
    assert isinstance(registry.get("noop"), NoOpTask)
    assert isinstance(registry.get("wait"), WaitTask)
    assert not any(registry.has(name) for name in PROCESS_TASKS)
    with pytest.raises(TaskNotFoundError, match=r"'python' \(registered: hello, noop, wait\)"):
        registry.get("python")


def test_a_left_out_builtin_can_still_be_registered_explicitly() -> None:
    registry = TaskRegistry(builtins=False)
    registry.register("shell", Hello)  # the operator's own task under that name
    assert isinstance(registry.get("shell"), Hello)
    assert registry.names() == ["shell"]


def test_builtins_true_is_the_default() -> None:
    assert TaskRegistry(builtins=True).names() == TaskRegistry().names() == BUILTIN_NAMES


@given(st.sets(st.sampled_from(BUILTIN_NAMES)))
@settings(max_examples=100, deadline=None)
def test_offered_builtins_are_exactly_those_named(offered: set[str]) -> None:
    registry = TaskRegistry(builtins=offered, plugins=False)
    assert registry.names() == sorted(offered)
    for name in BUILTIN_NAMES:
        assert registry.has(name) is (name in offered)


def test_unknown_builtin_names_are_refused_listing_the_builtins() -> None:
    with pytest.raises(ValueError, match="not built-in tasks") as info:
        TaskRegistry(builtins={"noop", "shel", "bash"})
    assert str(info.value) == (
        "not built-in tasks: 'bash', 'shel' (built-ins: " + ", ".join(BUILTIN_NAMES) + ")"
    )
    assert TaskRegistry().has("shell")  # nothing shared was changed


def test_a_lone_string_is_refused_rather_than_read_as_letters() -> None:
    with pytest.raises(TypeError, match="builtins must be a bool or a collection of names"):
        TaskRegistry(builtins="noop")


def test_plugins_stay_unless_plugins_false(
    fake_plugins: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("fake_registry_plugin")
    module.PluginHello = Hello  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_registry_plugin", module)
    fake_plugins.add("stabilize.tasks", "greet", "fake_registry_plugin:PluginHello")

    assert isinstance(TaskRegistry(builtins=False).get("greet"), Hello)
    without = TaskRegistry(builtins=False, plugins=False)
    assert not without.has("greet")
    with pytest.raises(TaskNotFoundError, match=r"'greet' \(registered: none\)"):
        without.get("greet")


def test_a_worker_without_shell_fails_that_workflow_and_runs_the_next(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    marker = tmp_path / "ran"
    # Submitted by a process whose registry knows shell; worked on by one that does not.
    submitter = WorkflowEngine(url)
    worker = WorkflowEngine(url, registry=TaskRegistry(builtins={"noop"}))
    try:
        worker.register("report", lambda stage: {"rows": 3})
        hostile = Workflow.create(
            application="t",
            name="hostile",
            stages=[
                StageExecution.for_task("run", "shell", context={"command": f"touch {marker}"})
            ],
        )
        fine = Workflow.create(
            application="t",
            name="fine",
            stages=[
                StageExecution.for_task("a", "noop"),
                StageExecution.for_task("b", "report", requisite_stage_ref_ids={"a"}),
            ],
        )
        submitter.start(hostile)
        submitter.start(fine)

        worker.process(timeout=30)

        failed = worker.store.retrieve(hostile.id)
        assert failed.status is S.TERMINAL
        stage = failed.stage_by_ref_id("run")
        assert stage.status is S.TERMINAL
        assert stage.tasks[0].status is S.TERMINAL
        details = stage.tasks[0].task_exception_details or {}
        assert details["message"] == (
            "stage 'run': no task registered as 'shell' on this worker (registered: noop, report)"
        )
        assert not marker.exists()
        done = worker.store.retrieve(fine.id)
        assert done.status is S.SUCCEEDED
        assert done.stage_by_ref_id("b").outputs == {"rows": 3}
    finally:
        worker.close()
        submitter.close()
