"""The base of the built-in tasks that run a program, and their outputs and messages.

:class:`ProcessTask` (shell, Python, Docker, SSH) runs its program with
:func:`~stabilize.tasks._process.run_process` on the stage's cancellation token; its
``on_cancel`` and ``on_timeout`` hooks set that token, which stops the process group. The
helpers below turn a :class:`~stabilize.tasks._process.ProcessResult` into masked outputs,
the end of stderr for a failure message, and the failed :class:`TaskResult`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from stabilize.cancellation import CancellationToken
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.tasks._context import mask_capped, mask_secrets
from stabilize.tasks._process import KILL_GRACE_SECONDS, TAIL_BYTES, ProcessResult, run_process
from stabilize.tasks.interface import Task
from stabilize.tasks.result import TaskResult

DEFAULT_TIMEOUT = 60.0
"""Seconds a command or script may run unless ``timeout`` says otherwise."""

ENGINE_TIMEOUT_MARGIN = 5.0
"""Seconds the engine's own timeout exceeds the task's, so the task stops its group first."""


def masked_streams(result: ProcessResult, secrets: Sequence[str]) -> tuple[str, str]:
    """Decoded stdout and stderr with ``secrets`` masked, also where the cap cut one."""
    return (
        mask_capped(result.stdout, secrets, cut_end=result.stdout_truncated),
        mask_capped(result.stderr, secrets, cut_end=result.stderr_truncated),
    )


def stderr_tail(result: ProcessResult, secrets: Sequence[str], limit: int = TAIL_BYTES) -> str:
    """The masked last ``limit`` bytes of stderr, even past the cap (empty when none)."""
    raw = result.stderr_tail_bytes[-limit:] if limit > 0 else b""
    cut_start = len(raw) < len(result.stderr_bytes) or result.stderr_truncated
    text = raw.decode("utf-8", errors="replace").strip()
    return mask_capped(text, secrets, cut_end=False, cut_start=cut_start)


def tail(text: str, lines: int = 20, chars: int = 2000) -> str:
    """The last few lines of already decoded and masked ``text`` (for error messages)."""
    kept = "\n".join(text.strip().splitlines()[-lines:])
    return kept[-chars:]


def failure(error: str, outputs: dict[str, Any], keep_going: bool = False) -> TaskResult:
    """A failed run: ``FAILED_CONTINUE`` when ``keep_going``, else ``TERMINAL``."""
    if keep_going:
        return TaskResult.failed_continue(error, outputs=outputs)
    return TaskResult(WorkflowStatus.TERMINAL, outputs=outputs, error=error)


def cannot_start(
    task: str,
    program: str,
    exc: OSError,
    secrets: Sequence[str] = (),
    keep_going: bool = False,
) -> TaskResult:
    """The failure of a program that :func:`run_process` could not start.

    The message reads ``<task>: could not start '<program>': FileNotFoundError: ...``
    (``PermissionError`` when it is not executable), with ``secrets`` masked.
    """
    reason = mask_secrets(f"{type(exc).__name__}: {exc}", secrets)
    return failure(f"{task}: could not start {program!r}: {reason}", {}, keep_going)


# -- the task side ------------------------------------------------------------------------


def ensure_token(stage: StageExecution) -> CancellationToken:
    """The stage's cancellation token, created when the stage has none (direct calls)."""
    if stage._cancel_token is None:
        stage._cancel_token = CancellationToken()
    return stage._cancel_token


def stop_on_hook(stage: StageExecution) -> None:
    """Set the stage's cancellation token, so that a running process group is stopped."""
    token = stage._cancel_token
    if token is not None:
        token.cancel()


class ProcessTask(Task):
    """A task that runs a program with :func:`run_process` and the stage's token.

    Attributes:
        kill_grace: Seconds between SIGTERM and SIGKILL when the process group is stopped.
    """

    kill_grace: float = KILL_GRACE_SECONDS

    def run(
        self,
        stage: StageExecution,
        argv: Sequence[str],
        *,
        timeout: float | None,
        max_output: int,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ProcessResult:
        """:func:`run_process` with the stage's cancellation token and :attr:`kill_grace`.

        Raises:
            OSError: The program could not be started (see :func:`cannot_start`).
        """
        return run_process(
            argv,
            timeout=timeout,
            max_output=max_output,
            stdin=stdin,
            cancel_token=ensure_token(stage),
            env=env,
            cwd=cwd,
            kill_grace=self.kill_grace,
        )

    def engine_limit(self, seconds: float) -> timedelta:
        """A little more than the task's own ``seconds``: the task stops its group first."""
        return timedelta(seconds=seconds + self.kill_grace + ENGINE_TIMEOUT_MARGIN)

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        """The engine gave up on the execution: stop its process group."""
        stop_on_hook(stage)
        return None

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        """The stage was canceled: stop its process group."""
        stop_on_hook(stage)
        return None
