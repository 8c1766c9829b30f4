"""``ShellTask``: run a command in its own process group, safely filled from the context.

The command comes from the stage context (``command``), as a string or an argument list.
``{key}`` placeholders in it are filled from the context the task receives (its own
configuration plus the outputs of upstream stages), and always safely:

* in an argument list, each placeholder fills in within its own argument; no shell runs;
* in a string run through the shell (the default), each value is quoted with
  :func:`shlex.quote` for the quoting context the placeholder sits in, and placeholders in
  places where quoting cannot be trusted (command substitutions, comments, here-documents,
  right after ``$`` or a backslash) are refused with a :class:`TaskConfigError`;
* in a string with ``shell: false``, the template is split into words first and each
  placeholder fills in within its word;
* where the shell reads a quoted word again (``eval``, ``trap``, ``source``, a shell's
  ``-c`` script, the command name) the placeholder is refused, and where bash or zsh would
  evaluate it as arithmetic or a variable name (``(( ))``, ``[[ ]]``, ``let``,
  ``declare -i``, subscripts, ``read``, ...) its value must be a plain number or name.

(The filling and quoting live in :mod:`stabilize.tasks._placeholders`, the reading of the
template in :mod:`stabilize.tasks._shell_lexer` and :mod:`stabilize.tasks._shell_rules`.)

So a value such as ``x; rm -rf ~``, ``$(curl evil)`` or ``a[$(curl evil)]`` is only ever
data, never a command.

The process runs in a new session (its own process group). A timeout or a cancellation
sends SIGTERM to the whole group, then SIGKILL after a grace period; whatever the command
left running in its group when it ended is terminated too (the runner is
:func:`stabilize.tasks._process.run_process`). See ``docs/tasks/shell.md``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from stabilize.errors import TransientError
from stabilize.models.stage import StageExecution
from stabilize.tasks._context import (
    ContextReader,
    mask_secrets,
    read_cwd,
    read_env,
    secret_values,
    timeout_of,
)
from stabilize.tasks._placeholders import render_command
from stabilize.tasks._process import DEFAULT_MAX_OUTPUT_SIZE, ProcessResult
from stabilize.tasks._process_task import (
    DEFAULT_TIMEOUT,
    ProcessTask,
    cannot_start,
    failure,
    masked_streams,
    stderr_tail,
)
from stabilize.tasks.result import TaskResult

__all__ = ["ShellTask"]


class ShellTask(ProcessTask):
    """Run a command from the stage context; register it as ``"shell"``.

    Context keys: ``command`` (required; a string or an argument list, with ``{key}``
    placeholders), ``shell`` (true, false or a shell path; strings default to /bin/sh),
    ``cwd``, ``env``, ``inherit_env`` (true), ``stdin``, ``timeout`` (60 s),
    ``expected_codes`` ([0]), ``max_output_size`` (10 MB per stream), ``secrets``,
    ``binary``, ``continue_on_failure``, ``restart_on_failure``.

    Outputs: ``stdout`` and ``stderr`` (without trailing newlines), ``returncode``,
    ``truncated`` and, with ``binary``, ``stdout_b64`` (every byte).

    Attributes:
        kill_grace: Seconds between SIGTERM and SIGKILL when the process group is stopped.
    """

    name = "ShellTask"

    def get_execution_timeout(self, stage: StageExecution) -> timedelta | None:
        """A little more than ``timeout``: the task stops its process group first.

        Args:
            stage: The stage about to run (its ``timeout`` key, in seconds; a malformed
                one counts as the default here and is refused by :meth:`execute`).

        Returns:
            The engine's limit for one execution.
        """
        return self.engine_limit(timeout_of(stage.context, DEFAULT_TIMEOUT))

    def execute(self, stage: StageExecution) -> TaskResult:
        """Validate the configuration, run the command and report its outcome.

        Args:
            stage: The stage; its context holds ``command`` and the other keys.

        Returns:
            A success with the command's outputs, or a failure naming the exit code.

        Raises:
            TaskConfigError: A context key is missing or malformed.
            TransientError: The command failed and ``restart_on_failure`` is set.
        """
        context = stage.context
        reader = ContextReader(context, self.name)
        argv, display, _ = render_command(context, self.name)
        timeout = float(reader.number("timeout", DEFAULT_TIMEOUT, minimum=0))
        if timeout <= 0:
            raise reader.error("timeout", "must be greater than 0")
        limit: int = reader.number(
            "max_output_size", DEFAULT_MAX_OUTPUT_SIZE, minimum=0, integer=True
        )
        codes = _expected_codes(reader)
        secrets = secret_values(reader)
        binary = reader.flag("binary", False)
        keep_going = reader.flag("continue_on_failure", False)
        restart = reader.flag("restart_on_failure", False)
        stdin_text: str | None = reader.text("stdin", None)
        cwd = read_cwd(reader)
        env = read_env(reader)

        shown = mask_secrets(display, secrets)
        try:
            result = self.run(
                stage,
                argv,
                cwd=cwd,
                env=env,
                stdin=stdin_text.encode() if stdin_text is not None else None,
                timeout=timeout,
                max_output=limit,
            )
        except OSError as exc:
            return cannot_start(self.name, shown, exc, secrets, keep_going)
        outputs = _outputs(result, secrets, binary)
        if result.cancelled:
            return TaskResult.canceled(outputs)
        if result.timed_out:
            error = f"{self.name}: command {shown!r} timed out after {timeout:g}s and was killed"
        elif result.returncode in codes:
            return TaskResult.success(outputs=outputs)
        else:
            error = (
                f"{self.name}: command {shown!r} exited with code {result.returncode} "
                f"(expected {codes})"
            )
        tail = stderr_tail(result, secrets)
        if tail:
            error += f"; stderr (end): {tail}"
        if restart:
            raise TransientError(error, code=result.returncode)
        return failure(error, outputs, keep_going)


def _expected_codes(reader: ContextReader) -> list[int]:
    value = reader.raw("expected_codes", [0])
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise reader.error("expected_codes", "must be a non-empty list of whole numbers")
    return list(value)


def _outputs(result: ProcessResult, secrets: Sequence[str], binary: bool) -> dict[str, Any]:
    stdout, stderr = masked_streams(result, secrets)
    # Trailing newlines dropped, as the original package (and `$(...)`) does, so that
    # `echo got:{stdout}` after `echo build-42` prints `got:build-42` (issue 14).
    outputs: dict[str, Any] = {
        "stdout": stdout.rstrip("\n"),
        "stderr": stderr.rstrip("\n"),
        "returncode": result.returncode,
        "truncated": result.truncated,
    }
    if binary:
        outputs["stdout_b64"] = base64.b64encode(result.stdout_bytes).decode("ascii")
    return outputs
