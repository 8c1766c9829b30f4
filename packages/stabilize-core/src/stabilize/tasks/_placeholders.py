"""Filling ``{key}`` placeholders into a command from the stage context, always safely.

Used by :class:`~stabilize.tasks.shell.ShellTask` (see its module for the rules):

* :func:`fill_placeholders` fills one argument (no shell reads it, so nothing is quoted);
* :func:`render_command` builds the whole argument vector from ``command`` and ``shell``:
  an argument list is filled item by item, a string without a shell is split into words
  first, and a string for a POSIX shell has each value quoted with :func:`shlex.quote` for
  the quoting context it stands in (:class:`_ShellLexer` tracks it), with placeholders
  refused where quoting cannot be trusted.
"""

from __future__ import annotations

import json
import os
import shlex
import string
from collections.abc import Mapping
from typing import Any

from stabilize.tasks._context import ContextReader, TaskConfigError

__all__ = ["fill_placeholders", "render_command"]

_NON_POSIX_SHELLS = frozenset(
    {"fish", "csh", "tcsh", "pwsh", "powershell", "nu", "xonsh", "elvish"}
)
_WORD_BREAKS = frozenset(" \t\n;&|()<>")


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
