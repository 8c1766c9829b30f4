"""PythonTask without processes: validation, import paths and in-process callables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from stabilize import StageExecution, WorkflowStatus
from stabilize.tasks._context import TaskConfigError
from stabilize.tasks.python_task import PythonTask, load_callable


def stage(context: dict[str, Any]) -> StageExecution:
    return StageExecution(ref_id="p", type="python", name="p", context=context)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("os.path.join", "must look like 'package.module:function'"),
        (":join", "must look like"),
        ("os.path:", "must look like"),
        ("no_such_module_xyz:run", "cannot import module 'no_such_module_xyz'"),
        ("os.path:no_such_function", "module 'os.path' has no attribute 'no_such_function'"),
        ("os:sep", "is not callable"),
    ],
)
def test_bad_import_paths_name_the_key_and_the_problem(path: str, message: str) -> None:
    with pytest.raises(TaskConfigError, match="context key 'callable'") as info:
        PythonTask().execute(stage({"callable": path}))
    assert message in str(info.value)


def test_load_callable_follows_dotted_attributes() -> None:
    assert load_callable("builtins:dict.fromkeys")(["a"]) == {"a": None}


def test_callable_with_inputs_as_keyword_arguments() -> None:
    result = PythonTask().execute(
        stage({"callable": "builtins:dict", "call_with": "inputs", "inputs": {"a": 1}})
    )
    assert result.status is WorkflowStatus.SUCCEEDED
    assert result.outputs == {"a": 1}


def test_callable_returning_a_json_value_becomes_result() -> None:
    result = PythonTask().execute(
        stage({"callable": "os.path:join", "call_with": "inputs", "inputs": {"a": "x"}})
    )
    assert result.outputs == {"result": "x"}


def test_callable_receiving_the_stage() -> None:
    # str(stage) is a string: the stage was passed as the single positional argument.
    result = PythonTask().execute(stage({"callable": "builtins:repr"}))
    assert "StageExecution" in result.outputs["result"]


def test_callable_returning_something_not_json_fails_clearly() -> None:
    with pytest.raises(TypeError, match="returned object"):
        PythonTask().execute(stage({"callable": "builtins:object", "call_with": "inputs"}))


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({}, "'script' is required"),
        ({"script": "1", "callable": "os:getcwd"}, "cannot be combined with 'callable'"),
        ({"script": 5}, "'script' must be a string"),
        ({"script_file": "/no/such/file.py"}, "'script_file' must be an existing file"),
        ({"module": "json"}, "'function' is required"),
        ({"script": "1", "inputs": [1]}, "'inputs' must be a mapping"),
        ({"script": "1", "args": "a b"}, "'args' must be a list of strings"),
        ({"script": "1", "timeout": -1}, "'timeout' must be at least 0"),
        ({"script": "1", "cwd": "/no/such/dir/anywhere"}, "'cwd' must be an existing"),
        ({"callable": "os:getcwd", "call_with": "kwargs"}, "'call_with' must be one of"),
    ],
)
def test_bad_configuration_fails_before_anything_runs(
    context: dict[str, Any], message: str
) -> None:
    with pytest.raises(TaskConfigError, match=message):
        PythonTask().execute(stage(context))


def test_execution_timeouts() -> None:
    task = PythonTask()
    assert task.get_execution_timeout(stage({"callable": "x:y", "timeout": 5})) == timedelta(
        seconds=5
    )
    limit = task.get_execution_timeout(stage({"script": "1", "timeout": 5}))
    assert limit is not None
    assert limit > timedelta(seconds=5 + task.kill_grace)
