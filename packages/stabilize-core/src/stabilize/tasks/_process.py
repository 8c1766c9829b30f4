"""Running an external program for a built-in task (shell, Python, Docker, SSH).

:func:`run_process` starts an argument list (never through a shell of its own) in a new
session, so the program leads a process group of its own. It feeds ``stdin`` without
blocking, keeps at most ``max_output`` bytes of each output stream (the rest is read and
dropped, so the program never blocks on a full pipe) plus the last :data:`TAIL_BYTES` of
stderr, and stops the **whole group** (SIGTERM, then SIGKILL after ``kill_grace``) when
the timeout passes or the cancellation token is set. Members the program leaves running in
its group when it ends are stopped the same way. A process outside the group that still
holds a pipe open cannot hang the task: reading stops ``drain_timeout`` seconds after the
group is gone. One thread does all of it with a selector. POSIX only.

:mod:`stabilize.tasks._process_task` turns a run into a task's outputs and messages.
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
from functools import cached_property
from typing import Any

from stabilize.cancellation import CancellationToken

DEFAULT_MAX_OUTPUT_SIZE = 10 * 1024 * 1024
"""Bytes kept of each of stdout and stderr unless the caller says otherwise."""

KILL_GRACE_SECONDS = 5.0
"""Seconds between SIGTERM and SIGKILL when a process group is stopped."""

DRAIN_SECONDS = 5.0
"""Seconds the pipes are still read once the group is gone (a stray holder of a pipe
outside the group must not hang the task)."""

TAIL_BYTES = 2000
"""Bytes of the end of stderr kept beyond the cap, for failure messages."""

_CHUNK = 65536
_POLL_SECONDS = 0.05
"""How often the cancellation token and the leader's exit are checked."""
_GROUP_POLL_SECONDS = 0.02
"""How often a stopping group is checked for live members."""


@dataclass(frozen=True)
class ProcessResult:
    """What became of one program run.

    Attributes:
        argv: The command line that ran.
        returncode: The exit status (negative: ended by that signal).
        stdout_bytes: The first ``max_output`` bytes of standard output.
        stderr_bytes: The first ``max_output`` bytes of standard error.
        stdout_truncated: Standard output was longer than the cap.
        stderr_truncated: Standard error was longer than the cap.
        stderr_tail_bytes: The last :data:`TAIL_BYTES` of standard error (even past the cap).
        timed_out: The group was stopped because the timeout passed.
        cancelled: The group was stopped because the cancellation token was set.
        pgid: The process group id (the leader's pid).
    """

    argv: list[str]
    returncode: int
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stderr_tail_bytes: bytes = b""
    timed_out: bool = False
    cancelled: bool = False
    pgid: int | None = None

    @property
    def exit_code(self) -> int:
        """The exit status (the same as :attr:`returncode`)."""
        return self.returncode

    @cached_property
    def stdout(self) -> str:
        """Standard output decoded as UTF-8 (bad bytes replaced), cut at the cap."""
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @cached_property
    def stderr(self) -> str:
        """Standard error decoded as UTF-8 (bad bytes replaced), cut at the cap."""
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def truncated(self) -> bool:
        """Either stream was cut at the cap."""
        return self.stdout_truncated or self.stderr_truncated


def find_executable(name: str) -> str | None:
    """The absolute path of ``name`` on ``PATH`` (or ``name`` itself when it is a path)."""
    return shutil.which(name)


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and its last :data:`TAIL_BYTES`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = b""
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
        self.total += len(chunk)
        self.tail = (self.tail + chunk)[-TAIL_BYTES:]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit


def group_has_live_members(pgid: int) -> bool:
    """True while process group ``pgid`` holds a process that is not a zombie.

    A zombie whose parent is not this process (an orphan awaiting its reaper) cannot run
    anything, so it does not count. Without ``/proc`` every member counts.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _GroupStopper:
    """Stops a process group without blocking: SIGTERM now, SIGKILL after ``grace``."""

    def __init__(self, pgid: int, grace: float) -> None:
        self.pgid = pgid
        self.grace = grace
        self.reason: str | None = None
        self.kill_at = 0.0
        self.killed = False

    def request(self, reason: str, now: float) -> None:
        """Start stopping the group (the first reason is the one reported)."""
        if self.reason is None:
            self.reason = reason
            self.kill_at = now + self.grace
            _signal_group(self.pgid, signal.SIGTERM)

    def advance(self, now: float, leader_done: bool) -> None:
        """SIGKILL the group once the grace is over or nothing in it is alive any more."""
        if self.reason is None or self.killed:
            return
        if now >= self.kill_at or (leader_done and not group_has_live_members(self.pgid)):
            _signal_group(self.pgid, signal.SIGKILL)
            self.killed = True

    @property
    def settled(self) -> bool:
        """Nothing was stopped, or the stop is complete."""
        return self.reason is None or self.killed


def run_process(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT_SIZE,
    stdin: bytes | None = None,
    cancel_token: CancellationToken | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    kill_grace: float = KILL_GRACE_SECONDS,
    drain_timeout: float = DRAIN_SECONDS,
) -> ProcessResult:
    """Run ``argv`` in a new process group to completion, the timeout, or cancellation.

    Args:
        argv: The program and its arguments (no shell is added).
        timeout: Seconds before the group is stopped (None: no limit).
        max_output: Bytes kept of each of stdout and stderr.
        stdin: Bytes written to standard input, which is then closed (None: empty input).
        cancel_token: Stop the group when this is set.
        env: The complete environment (None: this process's).
        cwd: The working directory.
        kill_grace: Seconds between SIGTERM and SIGKILL.
        drain_timeout: Seconds the pipes are still read once the group is gone.

    Returns:
        What happened.

    Raises:
        OSError: The program could not be started (``FileNotFoundError`` when it does not
            exist, ``PermissionError`` when it is not executable); see
            :func:`stabilize.tasks._process_task.cannot_start`.
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
        close_fds=True,
    )
    try:
        out, err, stopper = _supervise(
            proc, stdin or b"", timeout, max_output, cancel_token, kill_grace, drain_timeout
        )
    except BaseException:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return ProcessResult(
        argv=args,
        returncode=proc.wait(),
        stdout_bytes=bytes(out.head),
        stderr_bytes=bytes(err.head),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        stderr_tail_bytes=err.tail,
        timed_out=stopper.reason == "timeout",
        cancelled=stopper.reason == "cancelled",
        pgid=proc.pid,
    )


def _supervise(
    proc: subprocess.Popen[bytes],
    data: bytes,
    timeout: float | None,
    max_output: int,
    token: CancellationToken | None,
    grace: float,
    drain_timeout: float,
) -> tuple[_Capture, _Capture, _GroupStopper]:
    """Pump the pipes and watch the group until it is gone and the pipes are drained."""
    assert proc.stdout is not None
    assert proc.stderr is not None
    captures = {
        proc.stdout.fileno(): _Capture(max_output),
        proc.stderr.fileno(): _Capture(max_output),
    }
    out, err = captures[proc.stdout.fileno()], captures[proc.stderr.fileno()]
    stopper = _GroupStopper(proc.pid, grace)
    pending = memoryview(data)
    deadline = None if timeout is None else time.monotonic() + timeout
    leader_done = False
    drain_until: float | None = None
    with selectors.DefaultSelector() as sel:
        for fd in captures:
            sel.register(fd, selectors.EVENT_READ)
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            if pending:
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        try:
            while True:
                now = time.monotonic()
                if not leader_done and proc.poll() is not None:
                    leader_done = True
                    if group_has_live_members(proc.pid):
                        stopper.request("leftover", now)  # they would hold the pipes open
                if not leader_done and token is not None and token.is_cancelled:
                    stopper.request("cancelled", now)
                elif not leader_done and deadline is not None and now >= deadline:
                    stopper.request("timeout", now)
                stopper.advance(now, leader_done)
                if leader_done and stopper.settled:
                    if not any(fd in captures for fd in sel.get_map()):
                        break
                    if drain_until is None:
                        drain_until = now + drain_timeout
                    elif now >= drain_until:
                        break  # something outside the group holds a pipe open
                wait = _wait_time(now, deadline, stopper, leader_done, drain_until)
                if not sel.get_map():
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=wait)
                    continue
                for key, _ in sel.select(wait):
                    fd = int(key.fd)
                    if fd in captures:
                        chunk = os.read(fd, _CHUNK)
                        if chunk:
                            captures[fd].feed(chunk)
                        else:
                            sel.unregister(fd)
                    else:
                        pending = _write_some(fd, pending)
                        if not pending:
                            sel.unregister(fd)
                            _close(proc.stdin)
        finally:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                _close(stream)
    return out, err, stopper


def _wait_time(
    now: float,
    deadline: float | None,
    stopper: _GroupStopper,
    leader_done: bool,
    drain_until: float | None,
) -> float:
    """Seconds until something may need doing."""
    wait = _POLL_SECONDS
    if stopper.reason is None and deadline is not None:
        wait = min(wait, deadline - now)
    if not stopper.settled:
        wait = min(wait, stopper.kill_at - now)
        if leader_done:
            wait = min(wait, _GROUP_POLL_SECONDS)
    if drain_until is not None:
        wait = min(wait, drain_until - now)
    return max(0.0, wait)


def _write_some(fd: int, pending: memoryview) -> memoryview:
    """Write what the pipe takes now; a reader that went away gets nothing more."""
    try:
        written = os.write(fd, pending[:_CHUNK])
    except BlockingIOError:
        written = 0
    except OSError:  # BrokenPipeError: the program stopped reading
        written = len(pending)
    return pending[written:]


def _close(stream: Any) -> None:
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.close()
