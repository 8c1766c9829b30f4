"""Filling ``{key}`` placeholders into a command from the stage context, always safely.

Used by :class:`~stabilize.tasks.shell.ShellTask` (see its module for the rules):

* :func:`fill_placeholders` fills one argument (no shell reads it, so nothing is quoted);
* :func:`render_command` builds the whole argument vector from ``command`` and ``shell``:
  an argument list is filled item by item, a string without a shell is split into words
  first, and a string for a POSIX shell has each value quoted with :func:`shlex.quote` for
  the quoting context it stands in, with placeholders refused where quoting cannot be
  trusted, and values checked where the shell reads a word again as code, a name or
  arithmetic (:class:`~stabilize.tasks._shell_lexer.ShellLexer` tracks both);
* in every form, a placeholder may not choose the program, nor fill a shell's ``-c``
  script or script file.
"""

from __future__ import annotations

import json
import os
import shlex
import string
from collections.abc import Mapping
from typing import Any

from stabilize.tasks._context import ContextReader, TaskConfigError
from stabilize.tasks._shell_lexer import ShellLexer
from stabilize.tasks._shell_rules import HOLE, Need, Site, argv_refusal, value_fits

__all__ = ["fill_placeholders", "render_command"]

_NON_POSIX_SHELLS = frozenset(
    {"fish", "csh", "tcsh", "pwsh", "powershell", "nu", "xonsh", "elvish"}
)


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


def _value(context: Mapping[str, Any], key: str, task: str) -> str:
    """The text for placeholder ``key``; a NUL cannot be passed to a program."""
    value = _text(_lookup(context, key, task))
    if "\x00" in value:
        raise TaskConfigError(
            f"{task}: the value of placeholder {{{key}}} in context key 'command' holds a "
            "NUL character, which no program argument can carry"
        )
    return value


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
            pieces.append(_value(context, name, task))
    return "".join(pieces)


def _marked(template: str, task: str) -> str:
    """``template`` with each placeholder replaced by :data:`HOLE` (for :func:`argv_refusal`)."""
    return "".join(
        literal + (HOLE if name is not None else "") for literal, name in _parse(template, task)
    )


def _check_argv(templates: list[str], task: str) -> None:
    """Refuse placeholders where the program run would read them as code."""
    refused = argv_refusal([_marked(t, task) for t in templates])
    if refused is not None:
        index, why = refused
        name = next(n for _, n in _parse(templates[index], task) if n is not None)
        raise TaskConfigError(
            f"{task}: placeholder {{{name}}} in context key 'command' stands {why}"
        )


def _shell_render(template: str, context: Mapping[str, Any], task: str) -> tuple[str, list[str]]:
    """Fill a shell command template, quoting each value for where it stands."""
    lexer = ShellLexer()
    pieces: list[str] = []
    sites: list[tuple[Site, str]] = []
    for literal, name in _parse(template, task):
        lexer.feed(literal)
        pieces.append(literal)
        if name is None:
            continue
        why = lexer.refusal()
        if why is not None:
            raise TaskConfigError(
                f"{task}: placeholder {{{name}}} in context key 'command' stands {why}"
            )
        site = lexer.site(name)
        value = _value(context, name, task)
        sites.append((site, value))
        pieces.append(lexer.quote(value))
    lexer.finish()
    for site, value in sites:
        need, where = site.need, site.where
        if need in (Need.ANY, Need.ASSIGNED) and lexer.evaluates is not None:
            # A value kept in a variable or parameter by one command can reach the
            # evaluation in another; following the data is beyond a lexer (issue 13).
            need = Need.NUMBER
            where += (
                f", and the command evaluates text elsewhere ({lexer.evaluates}), which a "
                "value kept in a variable or parameter can reach"
            )
        if not value_fits(value, need):
            raise TaskConfigError(
                f"{task}: placeholder {{{site.key}}} in context key 'command' stands {where}; "
                f"bash or zsh could run code found in its value there, so it must be "
                f"{need.value}"
            )
    return "".join(pieces), [site.key for site, _ in sites]


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
        items: list[str] = []
        for item in command:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise reader.error("command", "must be a string or a list of strings")
            items.append(str(item))
        _check_argv(items, task)
        argv = [fill_placeholders(item, context, task) for item in items]
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
        _check_argv(words, task)
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
