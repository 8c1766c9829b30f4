"""``PythonTask``: run Python code from the stage context.

Three forms, chosen by which key the context holds:

* ``callable: "package.module:function"`` runs **in this process** (on the engine's task
  thread). The function receives the stage (``call_with: "stage"``, the default) or the
  ``inputs`` mapping as keyword arguments (``call_with: "inputs"``), and returns a
  :class:`TaskResult`, a dict (the outputs), ``None`` or another JSON value (``result``).
* ``script`` (inline code) or ``script_file`` runs in a **subprocess** (``python_path``,
  default :data:`sys.executable`). The code sees ``INPUT`` (the stage context with
  ``inputs`` merged over it) and sets ``RESULT`` to a JSON-serialisable value.
* ``module`` + ``function`` (the original package's form) also runs in a subprocess:
  ``RESULT = module.function(INPUT)``.

``INPUT`` goes to the child in a private temporary file and ``RESULT`` comes back in
another, so whatever the code prints to stdout or stderr does not disturb them. The child
runs in its own process group, stopped as a whole on timeout or cancellation. See
``docs/tasks/python.md``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from stabilize.errors import TransientError
from stabilize.models.stage import StageExecution
from stabilize.tasks._context import (
    ContextReader,
    TaskConfigError,
    mask_secrets,
    read_cwd,
    read_env,
    secret_values,
    timeout_of,
)
from stabilize.tasks._process import DEFAULT_MAX_OUTPUT_SIZE
from stabilize.tasks._process_task import (
    DEFAULT_TIMEOUT,
    ProcessTask,
    cannot_start,
    failure,
    masked_streams,
    stderr_tail,
)
from stabilize.tasks.result import TaskResult

__all__ = ["PythonTask", "load_callable"]

# The child's bootstrap: argv = [-c, input file, result file, mode, target, *args].
# It exits 0 after writing {"result": ...}; 3 when RESULT cannot be written as JSON; and
# with the code's own status (1 and a traceback on stderr) when the code raises.
_BOOTSTRAP = r"""
import importlib, json, linecache, os, sys, traceback
_input_path, _result_path, _mode, _target = sys.argv[1:5]
with open(_input_path, encoding="utf-8") as _f:
    INPUT = json.load(_f)
os.unlink(_input_path)
_status = 0
_ns = {"__name__": "__main__", "__builtins__": __builtins__, "INPUT": INPUT, "RESULT": None}
if _mode == "function":
    sys.argv = [_target, *sys.argv[5:]]
    _module, _, _name = _target.partition(":")
    _ns["RESULT"] = getattr(importlib.import_module(_module), _name)(INPUT)
else:
    if _mode == "file":
        with open(_target, encoding="utf-8") as _f:
            _source = _f.read()
        _ns["__file__"] = _target
        sys.path.insert(0, os.path.dirname(os.path.abspath(_target)))
        _filename = _target
    else:
        _source, _filename = _target, "<script>"
        linecache.cache[_filename] = (len(_source), None, _source.splitlines(True), _filename)
    sys.argv = [_filename, *sys.argv[5:]]
    try:
        exec(compile(_source, _filename, "exec"), _ns)
    except SystemExit as _exit:
        _status = _exit.code if isinstance(_exit.code, int) else (0 if _exit.code is None else 1)
        if _exit.code is not None and not isinstance(_exit.code, int):
            print(_exit.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()  # the Python-level printer shows <script> lines via linecache
        sys.exit(1)
try:
    _text = json.dumps({"result": _ns.get("RESULT")})
except (TypeError, ValueError) as _exc:
    print(f"PythonTask: RESULT cannot be written as JSON: {_exc}", file=sys.stderr)
    sys.exit(3)
with open(_result_path, "w", encoding="utf-8") as _f:
    _f.write(_text)
sys.stdout.flush()
sys.exit(_status)
"""


def load_callable(path: str, key: str = "callable", task: str = "PythonTask") -> Any:
    """Import ``"package.module:function"`` and return the function.

    Args:
        path: The import path, module and attribute separated by a colon (the attribute
            may be dotted: ``"pkg.mod:Class.method"``).
        key: The context key it came from, for error messages.
        task: The task name, for error messages.

    Returns:
        The callable.

    Raises:
        TaskConfigError: The path is malformed, the module cannot be imported, the
            attribute is missing or is not callable.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise TaskConfigError(
            f"{task}: context key {key!r} must look like 'package.module:function', not {path!r}"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskConfigError(
            f"{task}: context key {key!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise TaskConfigError(
                f"{task}: context key {key!r}: module {module_name!r} has no attribute {attr!r}"
            ) from exc
    if not callable(target):
        raise TaskConfigError(f"{task}: context key {key!r}: {path!r} is not callable")
    return target


def _adapt(value: Any, path: str) -> TaskResult:
    if isinstance(value, TaskResult):
        return value
    if value is None:
        return TaskResult.success()
    if isinstance(value, dict):
        return TaskResult.success(outputs=value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"PythonTask: {path!r} returned {type(value).__name__}; expected a TaskResult, "
            "a dict of outputs, None or a JSON value"
        ) from None
    return TaskResult.success(outputs={"result": value})


class PythonTask(ProcessTask):
    """Run a Python callable in-process, or a script in a subprocess; register as ``"python"``.

    Context keys: ``callable`` (+ ``call_with``), or ``script`` / ``script_file`` /
    ``module`` + ``function``; ``inputs``, ``args``, ``python_path``, ``timeout`` (60 s),
    ``cwd``, ``env``, ``inherit_env``, ``max_output_size`` (10 MB), ``secrets``,
    ``continue_on_failure``, ``restart_on_failure``.

    Subprocess outputs: ``stdout``, ``stderr``, ``exit_code``, ``result``, ``truncated``.
    A callable's outputs are whatever it returns.

    Attributes:
        kill_grace: Seconds between SIGTERM and SIGKILL when the child's group is stopped.
    """

    name = "PythonTask"

    def get_execution_timeout(self, stage: StageExecution) -> timedelta | None:
        """``timeout`` for a callable; a little more for a subprocess, which the task kills.

        Args:
            stage: The stage about to run (its ``timeout`` key, in seconds; a malformed
                one counts as the default here and is refused by :meth:`execute`).

        Returns:
            The engine's limit for one execution.
        """
        seconds = timeout_of(stage.context, DEFAULT_TIMEOUT)
        if stage.context.get("callable") is not None:
            return timedelta(seconds=seconds)
        return self.engine_limit(seconds)

    def execute(self, stage: StageExecution) -> TaskResult:
        """Validate the configuration and run the code.

        Args:
            stage: The stage; its context holds one of ``callable``, ``script``,
                ``script_file`` or ``module``, and the other keys.

        Returns:
            A success with the code's outputs, or a failure saying why it failed.

        Raises:
            TaskConfigError: A context key is missing or malformed, or the callable cannot
                be imported.
            TransientError: The script failed and ``restart_on_failure`` is set.
        """
        reader = ContextReader(stage.context, self.name)
        forms = [k for k in ("callable", "script", "script_file", "module") if reader.has(k)]
        if not forms:
            raise reader.error(
                "script", "is required (or 'script_file', 'module' + 'function', 'callable')"
            )
        if len(forms) > 1:
            raise reader.error(forms[1], f"cannot be combined with {forms[0]!r}")
        if forms[0] == "callable":
            return self._call(stage, reader)
        return self._run(stage, reader, forms[0])

    def _call(self, stage: StageExecution, reader: ContextReader) -> TaskResult:
        path: str = reader.text("callable")
        style = reader.choice("call_with", ("stage", "inputs"), "stage")
        inputs = _inputs(reader)
        fn = load_callable(path, "callable", self.name)
        value = fn(**inputs) if style == "inputs" else fn(stage)
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
        return _adapt(value, path)

    def _run(self, stage: StageExecution, reader: ContextReader, form: str) -> TaskResult:
        context = stage.context
        if form == "script":
            mode, target = "script", reader.text("script")
        elif form == "script_file":
            mode, target = "file", reader.text("script_file")
            if not os.path.isfile(target):
                raise reader.error("script_file", f"must be an existing file, not {target!r}")
        else:
            module, function = reader.text("module"), reader.text("function")
            mode, target = "function", f"{module}:{function}"
        inputs = _inputs(reader)
        args = _args(reader)
        python: str = reader.text("python_path", sys.executable)
        timeout = float(reader.number("timeout", DEFAULT_TIMEOUT, minimum=0))
        if timeout <= 0:
            raise reader.error("timeout", "must be greater than 0")
        limit: int = reader.number(
            "max_output_size", DEFAULT_MAX_OUTPUT_SIZE, minimum=0, integer=True
        )
        secrets = secret_values(reader)
        keep_going = reader.flag("continue_on_failure", False)
        restart = reader.flag("restart_on_failure", False)
        cwd = read_cwd(reader)
        env = read_env(reader)
        payload = {**context, **inputs}

        with tempfile.TemporaryDirectory(prefix="stabilize-py-") as tmp:
            input_path = os.path.join(tmp, "input.json")
            result_path = os.path.join(tmp, "result.json")
            fd = os.open(input_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, default=str)
            argv = [python, "-c", _BOOTSTRAP, input_path, result_path, mode, target, *args]
            try:
                run = self.run(stage, argv, cwd=cwd, env=env, timeout=timeout, max_output=limit)
            except OSError as exc:
                return cannot_start(self.name, python, exc, secrets, keep_going)
            result, result_error = _read_result(result_path)

        what = {"script": "script", "file": f"script {target!r}", "function": target}[mode]
        stdout, stderr = masked_streams(run, secrets)
        outputs: dict[str, Any] = {
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": run.returncode,
            "result": result,
            "truncated": run.truncated,
        }
        if run.cancelled:
            return TaskResult.canceled(outputs)
        if run.timed_out:
            error = f"{self.name}: {what} timed out after {timeout:g}s and was killed"
        elif run.returncode == 0 and result_error is None:
            return TaskResult.success(outputs=outputs)
        elif run.returncode == 0:
            error = f"{self.name}: {what} ended without a result: {result_error}"
        else:
            error = f"{self.name}: {what} failed with exit code {run.returncode}"
        tail = stderr_tail(run, secrets)
        if tail:
            error += f"; stderr (end): {tail}"
        error = mask_secrets(error, secrets)
        if restart:
            raise TransientError(error, code=run.returncode)
        return failure(error, outputs, keep_going)


def _args(reader: ContextReader) -> list[str]:
    value = reader.raw("args", [])
    if not isinstance(value, list | tuple) or not all(
        isinstance(a, str | int | float) and not isinstance(a, bool) for a in value
    ):
        raise reader.error("args", "must be a list of strings")
    return [str(a) for a in value]


def _inputs(reader: ContextReader) -> dict[str, Any]:
    value = reader.raw("inputs", {})
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise reader.error("inputs", "must be a mapping with string keys")
    return dict(value)


def _read_result(path: str) -> tuple[Any, str | None]:
    """The child's RESULT, or None and why it is missing."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)["result"], None
    except FileNotFoundError:
        return None, "the result file was not written"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"the result file is unreadable: {exc}"


async def _await(value: Any) -> Any:
    return await value
