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
  placeholder fills in within its word.

So a value such as ``x; rm -rf ~`` or ``$(curl evil)`` is only ever data, never a command.

The process runs in a new session (its own process group). A timeout or a cancellation
sends SIGTERM to the whole group, then SIGKILL after a grace period; whatever the command
left running in its group when it ended is terminated too. See ``docs/tasks/shell.md``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import signal
import string
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from stabilize.cancellation import CancellationToken
from stabilize.errors import TransientError
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.tasks._context import ContextReader, TaskConfigError, cap_output, mask, secret_values
from stabilize.tasks.interface import Task
from stabilize.tasks.result import TaskResult

__all__ = [
    "DEFAULT_MAX_OUTPUT_SIZE",
    "ProcessOutcome",
    "ShellTask",
    "fill_placeholders",
    "group_has_live_members",
    "mask_capped",
    "render_command",
    "run_process",
]

DEFAULT_MAX_OUTPUT_SIZE = 10 * 1024 * 1024
"""Bytes kept of each of stdout and stderr unless ``max_output_size`` says otherwise."""

DEFAULT_TIMEOUT = 60.0
"""Seconds a command may run unless ``timeout`` says otherwise."""

KILL_GRACE_SECONDS = 5.0
"""Seconds between SIGTERM and SIGKILL when a process group is stopped."""

ENGINE_TIMEOUT_MARGIN = 5.0
"""Seconds the engine's own timeout exceeds the task's, so the task kills first."""

TAIL_BYTES = 2000
"""Bytes of the end of stderr quoted in failure messages."""

_NON_POSIX_SHELLS = frozenset(
    {"fish", "csh", "tcsh", "pwsh", "powershell", "nu", "xonsh", "elvish"}
)
_WORD_BREAKS = frozenset(" \t\n;&|()<>")


# -- placeholders -----------------------------------------------------------------------


def _lookup(context: Mapping[str, Any], key: str, task: str) -> Any:
    """The context value for placeholder ``key`` (dotted keys walk nested mappings)."""
    if key in context:
        return context[key]
    if "." in key:
        node: Any = context
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return node
    raise TaskConfigError(
        f"{task}: placeholder {{{key}}} in context key 'command' names no context key "
        f"(write a literal brace as {{{{ or }}}}, e.g. ${{{{VAR}}}} for a shell variable)"
    )


def _text(value: Any) -> str:
    """A context value as the text a placeholder stands for."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def _parse(template: str, task: str) -> list[tuple[str, str | None]]:
    """Split ``template`` into (literal text, placeholder name or None) pairs."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TaskConfigError(
            f"{task}: context key 'command' has unbalanced braces ({exc}); "
            "write a literal brace as {{ or }}"
        ) from exc
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parts:
        if name is None:
            out.append((literal, None))
            continue
        if spec or conversion:
            raise TaskConfigError(
                f"{task}: placeholder {{{name}}} in context key 'command' may not have a "
                "format spec or conversion"
            )
        if not name or not all(p.isidentifier() for p in name.split(".")):
            raise TaskConfigError(
                f"{task}: placeholder {{{name}}} in context key 'command' is not a context "
                "key name; write a literal brace as {{ or }}"
            )
        out.append((literal, name))
    return out


def fill_placeholders(template: str, context: Mapping[str, Any], task: str = "ShellTask") -> str:
    """Fill ``{key}`` placeholders in one argument (no quoting: no shell reads it).

    Args:
        template: The text, with ``{{`` and ``}}`` for literal braces.
        context: Where values come from.
        task: The task name used in error messages.

    Returns:
        The text with each placeholder replaced by its value.

    Raises:
        TaskConfigError: A placeholder names no context key or is malformed.
    """
    pieces: list[str] = []
    for literal, name in _parse(template, task):
        pieces.append(literal)
        if name is not None:
            pieces.append(_text(_lookup(context, name, task)))
    return "".join(pieces)


class _ShellLexer:
    """Tracks the POSIX shell quoting context while a command template is read.

    Only what decides how a placeholder must be quoted is tracked: single and double
    quotes at top level, backslash escapes, and the constructs in which a placeholder is
    refused (command and parameter substitutions, backticks, comments, here-documents).

    Frames: ``top`` (unquoted), ``sq``, ``dq`` (``dq!`` once it held a substitution),
    ``cmd`` (``$(...)``, read like top), ``param`` (``${...}``) and ``bt`` (backticks).
    Placeholders are accepted only in ``top`` and in a ``sq``/``dq`` directly on it.
    """

    def __init__(self) -> None:
        self.stack: list[str] = ["top"]
        self.parens: list[int] = [0]
        self.escaped = False
        self.comment = False
        self.heredoc = False
        self.prev = "\n"

    def _push(self, frame: str) -> None:
        self.stack.append(frame)
        self.parens.append(0)

    def _pop(self) -> None:
        self.stack.pop()
        self.parens.pop()

    def feed(self, text: str) -> None:
        """Advance the state over ``text`` (literal template text, braces unescaped)."""
        i = 0
        while i < len(text):
            ch = text[i]
            nxt = text[i + 1] if i + 1 < len(text) else ""
            frame = self.stack[-1]
            if self.comment:
                self.comment = ch != "\n"
            elif self.escaped:
                self.escaped = False
            elif frame == "sq":
                if ch == "'":
                    self._pop()
            elif frame in ("dq", "dq!"):
                if ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self._pop()
                elif ch == "`" or (ch == "$" and nxt in ("(", "{")):
                    self.stack[-1] = "dq!"
                    i = self._substitution(ch, nxt, i)
            elif (frame == "param" and ch == "}") or (frame == "bt" and ch == "`"):
                self._pop()
            elif frame == "cmd" and ch == ")":
                if self.parens[-1] == 0:
                    self._pop()
                else:
                    self.parens[-1] -= 1
            elif frame == "cmd" and ch == "(":
                self.parens[-1] += 1
            elif ch == "#" and self.prev in _WORD_BREAKS and frame != "param":
                self.comment = True
            elif ch == "<" and nxt == "<":
                self.heredoc = True
                i += 1
            elif ch == "\\":
                self.escaped = True
            elif ch == "'":
                self._push("sq")
            elif ch == '"':
                self._push("dq")
            elif ch == "`" or (ch == "$" and nxt in ("(", "{")):
                i = self._substitution(ch, nxt, i)
            self.prev = text[i]
            i += 1

    def _substitution(self, ch: str, nxt: str, i: int) -> int:
        if ch == "`":
            self._push("bt")
            return i
        self._push("cmd" if nxt == "(" else "param")
        return i + 1

    def refusal(self) -> str | None:
        """Why a placeholder may not stand here, or None when it may."""
        if self.comment:
            return "inside a comment"
        if self.heredoc:
            return "after a here-document (<<)"
        if self.escaped:
            return "right after a backslash"
        frame = self.stack[-1]
        if self.prev == "$" and frame != "sq":
            return "right after '$' (write ${{VAR}} for a shell variable)"
        if frame == "dq!":
            return "inside a double-quoted string holding a command substitution"
        if len(self.stack) > 2 or (len(self.stack) == 2 and frame not in ("sq", "dq")):
            return "inside a command substitution, backticks or ${...}"
        return None

    def quote(self, value: str) -> str:
        """``value`` quoted so that it is one literal piece of the current word."""
        frame = self.stack[-1]
        quoted = shlex.quote(value)
        self.prev = "'"  # the quoted value ends with a quote: not a word break
        if frame == "sq":
            return f"'{quoted}'"  # close the quote, add the value, reopen
        if frame == "dq":
            return f'"{quoted}"'
        return quoted


def _shell_render(template: str, context: Mapping[str, Any], task: str) -> tuple[str, list[str]]:
    """Fill a shell command template, quoting each value for where it stands."""
    lexer = _ShellLexer()
    pieces: list[str] = []
    names: list[str] = []
    for literal, name in _parse(template, task):
        lexer.feed(literal)
        pieces.append(literal)
        if name is None:
            continue
        why = lexer.refusal()
        if why is not None:
            raise TaskConfigError(
                f"{task}: placeholder {{{name}}} in context key 'command' stands {why}, where "
                "its value cannot be quoted safely; move it to a plain word, or pass the "
                "command as an argument list"
            )
        value = _text(_lookup(context, name, task))
        pieces.append(lexer.quote(value))
        names.append(name)
    return "".join(pieces), names


def _shell_path(value: Any, reader: ContextReader) -> str | None:
    """The shell to run a string command with, or None for no shell."""
    if isinstance(value, bool):
        return "/bin/sh" if value else None
    if isinstance(value, str) and value.strip():
        if value.lower() in ("true", "false"):
            return "/bin/sh" if value.lower() == "true" else None
        return value
    raise reader.error("shell", "must be true, false or the path of a shell")


def render_command(
    context: Mapping[str, Any], task: str = "ShellTask"
) -> tuple[list[str], str, bool]:
    """Build the argument vector from ``command`` and ``shell`` in ``context``.

    Args:
        context: The stage context (``command``, ``shell`` and the placeholder values).
        task: The task name used in error messages.

    Returns:
        ``(argv, display, uses_shell)``: what to execute, a readable form of the command for
        messages (not yet masked), and whether a shell interprets it.

    Raises:
        TaskConfigError: ``command`` or ``shell`` is missing or malformed, or a
            placeholder is unknown or stands where it cannot be quoted safely.
    """
    reader = ContextReader(context, task)
    command = reader.raw("command")
    shell_value = context.get("shell")
    if isinstance(command, list | tuple):
        if not command:
            raise reader.error("command", "must not be an empty list")
        if shell_value not in (None, False, "false"):
            raise reader.error("shell", "applies to string commands only; command is a list")
        argv: list[str] = []
        for item in command:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise reader.error("command", "must be a string or a list of strings")
            argv.append(fill_placeholders(str(item), context, task))
        return argv, shlex.join(argv), False
    if not isinstance(command, str):
        raise reader.error("command", "must be a string or a list of strings")
    if not command.strip():
        raise reader.error("command", "must not be empty")
    shell = _shell_path(True if shell_value is None else shell_value, reader)
    if shell is None:
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise reader.error("command", f"cannot be split into words: {exc}") from exc
        argv = [fill_placeholders(word, context, task) for word in words]
        return argv, shlex.join(argv), False
    rendered, names = _shell_render(command, context, task)
    if names and os.path.basename(shell) in _NON_POSIX_SHELLS:
        raise reader.error(
            "shell",
            f"is {shell!r}, which does not quote like a POSIX shell; placeholders need "
            "sh, bash, dash, ksh or zsh",
        )
    return [shell, "-c", rendered], rendered, True


# -- running a process group ------------------------------------------------------------


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and its last ``TAIL_BYTES``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = b""
        self.total = 0
        self.lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self.lock:
            room = self.limit - len(self.head)
            if room > 0:
                self.head += chunk[:room]
            self.total += len(chunk)
            self.tail = (self.tail + chunk)[-TAIL_BYTES:]

    def snapshot(self) -> tuple[bytes, bool, bytes]:
        with self.lock:
            return bytes(self.head), self.total > self.limit, self.tail


def _drain(stream: Any, capture: _Capture) -> None:
    """Read ``stream`` to its end into ``capture``, then close it (this thread owns it)."""
    try:
        fd = stream.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            capture.feed(chunk)
    except (OSError, ValueError):
        return
    finally:
        stream.close()


def _feed_stdin(pipe: Any, data: bytes) -> None:
    try:
        pipe.write(data)
    except OSError:  # the command stopped reading (BrokenPipeError) or ended
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


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


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the whole process group, then SIGKILL whatever is left after ``grace``."""
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    while group_has_live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()


@dataclass
class ProcessOutcome:
    """What :func:`run_process` observed.

    Attributes:
        returncode: The exit status (negative: killed by that signal); None when the
            process could not be started.
        stdout: The first ``max_output_size`` bytes of standard output.
        stderr: The first ``max_output_size`` bytes of standard error.
        stdout_truncated: Standard output was longer than the cap.
        stderr_truncated: Standard error was longer than the cap.
        stderr_tail: The last bytes of standard error (for failure messages).
        timed_out: The process group was stopped because ``timeout`` passed.
        canceled: The process group was stopped because the task was canceled.
        pgid: The process group id (the leader's pid), or None when nothing started.
        start_error: Why the process could not be started.
    """

    returncode: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stderr_tail: bytes = b""
    timed_out: bool = False
    canceled: bool = False
    pgid: int | None = None
    start_error: str | None = None

    @property
    def truncated(self) -> bool:
        """Either stream was cut at the cap."""
        return self.stdout_truncated or self.stderr_truncated


def run_process(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float | None = None,
    max_output_size: int = DEFAULT_MAX_OUTPUT_SIZE,
    token: CancellationToken | None = None,
    kill_grace: float = KILL_GRACE_SECONDS,
) -> ProcessOutcome:
    """Run ``argv`` in a new process group, capturing capped output.

    A background thread watches ``token``: when it is set the whole group is stopped
    (SIGTERM, then SIGKILL after ``kill_grace``). ``timeout`` stops the group the same
    way. When the leader exits, members it left running in the group are stopped too.

    Args:
        argv: The program and its arguments (no shell is added).
        cwd: The working directory.
        env: The complete environment (None: this process's).
        stdin: Bytes written to standard input, which is then closed (None: empty input).
        timeout: Seconds before the group is stopped (None: no limit).
        max_output_size: Bytes kept of each of stdout and stderr.
        token: The cancellation token to watch.
        kill_grace: Seconds between SIGTERM and SIGKILL.

    Returns:
        What happened; a program that cannot be started gives ``returncode=None`` and
        ``start_error``.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        return ProcessOutcome(None, start_error=f"{type(exc).__name__}: {exc}")
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = _Capture(max_output_size), _Capture(max_output_size)
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    if stdin is not None:
        threading.Thread(target=_feed_stdin, args=(proc.stdin, stdin), daemon=True).start()

    finished = threading.Event()
    stopping = threading.Lock()
    reasons: list[str] = []

    def stop(reason: str) -> None:
        if not stopping.acquire(blocking=False):
            return  # someone is already stopping the group
        reasons.append(reason)
        _stop_group(proc, kill_grace)

    def watch() -> None:
        assert token is not None
        while not finished.is_set():
            if token.wait(0.05):
                if not finished.is_set():
                    stop("canceled")
                return

    watcher = None
    if token is not None:
        watcher = threading.Thread(target=watch, name="stabilize-shell-watch", daemon=True)
        watcher.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop("timeout")
    proc.wait()
    if group_has_live_members(proc.pid):
        stop("leftover")  # members the command left behind hold the pipes open
    finished.set()
    if watcher is not None:
        watcher.join()
    for reader in readers:
        reader.join(timeout=kill_grace)
    stdout, out_cut, _ = out.snapshot()
    stderr, err_cut, tail = err.snapshot()
    return ProcessOutcome(
        proc.returncode,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=out_cut,
        stderr_truncated=err_cut,
        stderr_tail=tail,
        timed_out="timeout" in reasons,
        canceled="canceled" in reasons,
        pgid=proc.pid,
    )


# -- masking ----------------------------------------------------------------------------


def mask_capped(text: str, secrets: Sequence[str], cut_end: bool, cut_start: bool = False) -> str:
    """Mask ``secrets`` in ``text``, including a secret cut in half where the text was cut.

    Args:
        text: The captured text.
        secrets: The values to hide.
        cut_end: The text was cut at its end (its end may hold a secret's beginning).
        cut_start: The text was cut at its start (its start may hold a secret's end).

    Returns:
        The text with every secret (and secret fragment at a cut) replaced by ``***``.
    """
    text = mask(text, secrets)
    for secret in (s for s in secrets if s):
        if cut_end:
            for n in range(min(len(secret) - 1, len(text)), 0, -1):
                if text.endswith(secret[:n]):
                    text = text[:-n] + "***"
                    break
        if cut_start:
            for n in range(min(len(secret) - 1, len(text)), 0, -1):
                if text.startswith(secret[-n:]):
                    text = "***" + text[n:]
                    break
    return text


def stderr_tail(outcome: ProcessOutcome, secrets: Sequence[str], limit: int) -> str:
    """The masked end of stderr, for a failure message (empty when there is none)."""
    raw = outcome.stderr_tail[-limit:] if limit > 0 else b""
    cut_start = len(raw) < len(outcome.stderr) or outcome.stderr_truncated
    text = raw.decode("utf-8", errors="replace").strip()
    return mask_capped(text, secrets, cut_end=False, cut_start=cut_start)


# -- the task ---------------------------------------------------------------------------


def timeout_of(context: Mapping[str, Any]) -> float:
    """The ``timeout`` key leniently (for sizing the engine's timeout; execute validates)."""
    value = context.get("timeout")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_TIMEOUT


def stop_on_hook(stage: StageExecution) -> None:
    """Set the stage's cancellation token, so that a running process group is stopped."""
    token = stage._cancel_token
    if token is not None:
        token.cancel()


def ensure_token(stage: StageExecution) -> CancellationToken:
    """The stage's cancellation token, created when the stage has none (direct calls)."""
    if stage._cancel_token is None:
        stage._cancel_token = CancellationToken()
    return stage._cancel_token


def read_env(reader: ContextReader) -> dict[str, str]:
    """``env`` merged over ``os.environ`` (or alone when ``inherit_env`` is false)."""
    extra: dict[str, str] = reader.text_map("env", {})
    base = dict(os.environ) if reader.flag("inherit_env", True) else {}
    base.update(extra)
    return base


def read_cwd(reader: ContextReader) -> str | None:
    """``cwd``, which must be an existing directory."""
    cwd: str | None = reader.text("cwd", None)
    if cwd is not None and not os.path.isdir(cwd):
        raise reader.error("cwd", f"must be an existing directory, not {cwd!r}")
    return cwd


class ShellTask(Task):
    """Run a command from the stage context; register it as ``"shell"``.

    Context keys: ``command`` (required; a string or an argument list, with ``{key}``
    placeholders), ``shell`` (true, false or a shell path; strings default to /bin/sh),
    ``cwd``, ``env``, ``inherit_env`` (true), ``stdin``, ``timeout`` (60 s),
    ``expected_codes`` ([0]), ``max_output_size`` (10 MB per stream), ``secrets``,
    ``binary``, ``continue_on_failure``, ``restart_on_failure``.

    Outputs: ``stdout``, ``stderr``, ``returncode``, ``truncated`` and, with ``binary``,
    ``stdout_b64``.

    Attributes:
        kill_grace: Seconds between SIGTERM and SIGKILL when the process group is stopped.
    """

    kill_grace: float = KILL_GRACE_SECONDS
    name = "ShellTask"

    def get_execution_timeout(self, stage: StageExecution) -> timedelta | None:
        """A little more than ``timeout``: the task stops its process group first."""
        seconds = timeout_of(stage.context) + self.kill_grace + ENGINE_TIMEOUT_MARGIN
        return timedelta(seconds=seconds)

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        """The engine gave up on the execution: stop its process group."""
        stop_on_hook(stage)
        return None

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        """The stage was canceled: stop its process group."""
        stop_on_hook(stage)
        return None

    def execute(self, stage: StageExecution) -> TaskResult:
        """Validate the configuration, run the command and report its outcome.

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

        shown = mask(display, secrets)
        outcome = run_process(
            argv,
            cwd=cwd,
            env=env,
            stdin=stdin_text.encode() if stdin_text is not None else None,
            timeout=timeout,
            max_output_size=limit,
            token=ensure_token(stage),
            kill_grace=self.kill_grace,
        )
        if outcome.start_error is not None:
            error = f"{self.name}: could not start {shown!r}: {mask(outcome.start_error, secrets)}"
            return _fail(error, {}, keep_going)
        outputs = _outputs(outcome, secrets, binary, limit)
        if outcome.canceled:
            return TaskResult.canceled(outputs)
        if outcome.timed_out:
            error = f"{self.name}: command {shown!r} timed out after {timeout:g}s and was killed"
        elif outcome.returncode in codes:
            return TaskResult.success(outputs=outputs)
        else:
            error = (
                f"{self.name}: command {shown!r} exited with code {outcome.returncode} "
                f"(expected {codes})"
            )
        tail = stderr_tail(outcome, secrets, TAIL_BYTES)
        if tail:
            error += f"; stderr (end): {tail}"
        if restart:
            raise TransientError(error, code=outcome.returncode)
        return _fail(error, outputs, keep_going)


def _fail(error: str, outputs: dict[str, Any], keep_going: bool) -> TaskResult:
    if keep_going:
        return TaskResult.failed_continue(error, outputs=outputs)
    return TaskResult(WorkflowStatus.TERMINAL, outputs=outputs, error=error)


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


def _outputs(
    outcome: ProcessOutcome, secrets: Sequence[str], binary: bool, limit: int
) -> dict[str, Any]:
    stdout, out_cut = cap_output(outcome.stdout, limit)
    stderr, err_cut = cap_output(outcome.stderr, limit)
    outputs: dict[str, Any] = {
        "stdout": mask_capped(stdout, secrets, cut_end=outcome.stdout_truncated),
        "stderr": mask_capped(stderr, secrets, cut_end=outcome.stderr_truncated),
        "returncode": outcome.returncode,
        "truncated": outcome.truncated or out_cut or err_cut,
    }
    if binary:
        outputs["stdout_b64"] = base64.b64encode(outcome.stdout).decode("ascii")
    return outputs
