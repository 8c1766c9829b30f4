"""Running an external program for a built-in task (Docker, SSH): argv only, never a shell.

:func:`run_process` starts the program in a process group of its own, feeds it ``stdin``,
collects at most ``max_output`` bytes of each output stream (the rest is read and
dropped, so the program never blocks on a full pipe), and kills the whole group when the
timeout passes or when the task's cancellation token is set. POSIX only.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stabilize.cancellation import CancellationToken
from stabilize.tasks._context import cap_output

_CHUNK = 65536
_POLL_SECONDS = 0.1
"""How often a running program's cancellation token is checked."""
_DRAIN_SECONDS = 5.0
"""How long to keep reading pipes after the group was killed (a stray holder of the pipe
outside the group must not hang the task)."""


@dataclass(frozen=True)
class ProcessResult:
    """What became of one program run.

    ``exit_code`` is the program's status (negative: killed by that signal).
    ``stdout``/``stderr`` are decoded as UTF-8 (bad bytes replaced) and cut at the limit;
    ``truncated`` says whether either was cut. ``timed_out`` and ``cancelled`` say the
    process group was killed, and why.
    """

    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool = False
    cancelled: bool = False


def find_executable(name: str) -> str | None:
    """The absolute path of ``name`` on ``PATH`` (or ``name`` itself when it is a path)."""
    return shutil.which(name)


class _Sink:
    """Keeps the first ``limit + 1`` bytes of a stream (one extra to detect the cut)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        room = self.limit + 1 - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def text(self) -> tuple[str, bool]:
        return cap_output(bytes(self.data), self.limit)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def run_process(
    argv: Sequence[str],
    *,
    timeout: float | None,
    max_output: int,
    stdin: bytes | None = None,
    cancel_token: CancellationToken | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> ProcessResult:
    """Run ``argv`` (no shell) to completion, the timeout, or cancellation.

    Raises:
        FileNotFoundError: the program does not exist.
        PermissionError: the program is not executable.
    """
    args = [str(a) for a in argv]
    proc = subprocess.Popen(  # an argv list, never a shell
        args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    sinks = {proc.stdout.fileno(): _Sink(max_output), proc.stderr.fileno(): _Sink(max_output)}
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    pending = memoryview(stdin or b"")
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = cancelled = False
    drain_until: float | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(out_fd, selectors.EVENT_READ)
        sel.register(err_fd, selectors.EVENT_READ)
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            if pending:
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        try:
            while sel.get_map():
                now = time.monotonic()
                if drain_until is None:
                    if cancel_token is not None and cancel_token.is_cancelled:
                        cancelled = True
                    elif deadline is not None and now >= deadline:
                        timed_out = True
                    if cancelled or timed_out:
                        _kill_group(proc)
                        drain_until = now + _DRAIN_SECONDS
                elif now >= drain_until:
                    break
                wait = _POLL_SECONDS
                if drain_until is not None:
                    wait = min(wait, max(0.0, drain_until - now))
                elif deadline is not None:
                    wait = min(wait, max(0.0, deadline - now))
                for key, _ in sel.select(wait):
                    fd = int(key.fd)
                    if fd in sinks:
                        chunk = os.read(fd, _CHUNK)
                        if chunk:
                            sinks[fd].add(chunk)
                        else:
                            sel.unregister(fd)
                    else:
                        assert proc.stdin is not None
                        try:
                            written = os.write(fd, pending[:_CHUNK])
                        except BrokenPipeError:
                            written = len(pending)
                        pending = pending[written:]
                        if not pending:
                            sel.unregister(fd)
                            with contextlib.suppress(BrokenPipeError):
                                proc.stdin.close()
        finally:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
    # The pipes are closed: the program has exited or is about to. Wait for it, still
    # honouring the timeout and cancellation.
    while True:
        try:
            exit_code = proc.wait(timeout=_POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if cancel_token is not None and cancel_token.is_cancelled:
                cancelled = True
            elif deadline is not None and time.monotonic() >= deadline:
                timed_out = True
            if cancelled or timed_out:
                _kill_group(proc)
    stdout, out_cut = sinks[out_fd].text()
    stderr, err_cut = sinks[err_fd].text()
    return ProcessResult(
        argv=args,
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
        truncated=out_cut or err_cut,
        timed_out=timed_out,
        cancelled=cancelled,
    )


def tail(text: str, lines: int = 20, chars: int = 2000) -> str:
    """The last few lines of ``text`` (for error messages)."""
    kept = "\n".join(text.strip().splitlines()[-lines:])
    return kept[-chars:]
