"""What shell commands do with their words: the tables and checks behind ``ShellLexer``.

Which programs run their first operand as a script, which builtins run their arguments as
code, take variable names or evaluate arithmetic (bash and zsh evaluate array subscripts in
arithmetic even from a quoted word), and what a placeholder's value must look like in each
case (:class:`Need`). :mod:`stabilize.tasks._shell_lexer` applies them while it reads a
template; :func:`argv_refusal` applies them to an argument vector.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass

__all__ = [
    "ASSIGNMENT",
    "DECLARE",
    "EXPANDS",
    "HOLE",
    "NAME_ARGS",
    "NUMERIC_ARGS",
    "NUMERIC_DECLARE",
    "PARAMETER_FORMS",
    "PREFIXES",
    "REPARSE",
    "SHELLS",
    "SPECIAL_NUMBERS",
    "Need",
    "Site",
    "argv_refusal",
    "base",
    "format_word",
    "numeric_format",
    "script_reason",
    "shell_awaiting_script",
    "value_fits",
]


SHELLS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "lksh", "oksh", "ash"}
    | {"yash", "posh", "rbash", "rzsh", "fish", "csh", "tcsh"}
)
"""Programs whose first operand (the ``-c`` script or a script file) is shell code."""

REPARSE = frozenset(
    {"eval", "trap", "source", ".", "alias", "enable", "zmodload", "autoload", "fc", "bind"}
)
"""Builtins that run their arguments (or the file they name) as shell code."""

DECLARE = frozenset(
    {"declare", "typeset", "local", "export", "readonly", "integer", "float", "private"}
)
NUMERIC_DECLARE = frozenset({"integer", "float"})
NAME_ARGS = frozenset(
    {"read", "unset", "mapfile", "readarray", "getopts", "vared", "wait", "zparseopts"}
)
"""Builtins whose arguments are variable names (subscripts in them are arithmetic)."""
NUMERIC_ARGS = frozenset(
    {"shift", "exit", "return", "break", "continue", "repeat", "ulimit", "limit", "sched"}
)
"""Builtins whose arguments zsh evaluates as arithmetic."""
_TEXT_CONVERSIONS = re.compile(r"%[-+ #0-9.]*[sbqc%]")

PREFIXES = frozenset(
    {"!", "{", "if", "then", "else", "elif", "do", "while", "until", "time", "-"}
    | {"builtin", "command", "exec", "noglob", "nocorrect"}
)
"""Words before the command word: reserved words and builtins that run the next word."""

PARAMETER_FORMS = {
    "!": "indirect expansion ${!x}",
    "(": "zsh parameter flags such as ${(e)x}",
    "~": "zsh globbing ${~x}",
}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_NUMBER = re.compile(r"-?[0-9]+", re.ASCII)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
HOLE = "\x00"  # a placeholder's place in a word's text
EXPANDS = "\x01"  # marks a word holding an expansion ($ or a backtick, unquoted or in "")
SPECIAL_NUMBERS = frozenset({EXPANDS + "$?", EXPANDS + "$#", EXPANDS + "$$", EXPANDS + "$!"})


class Need(enum.Enum):
    """What a placeholder's value must look like where it stands."""

    ANY = "any text"
    NUMBER = "a plain whole number (digits, optionally after '-')"
    NAME = "a plain variable name (letters, digits and '_', not starting with a digit)"
    PLAIN = "a plain whole number or variable name"
    ASSIGNED = "any text, or a plain whole number if the command evaluates text elsewhere"


@dataclass(frozen=True)
class Site:
    """Where one placeholder stands: what its value must be, and why (for errors)."""

    key: str
    need: Need
    where: str


def value_fits(value: str, need: Need) -> bool:
    """True when ``value`` is acceptable for ``need`` (ASSIGNED counts as ANY)."""
    if need is Need.NUMBER:
        return _NUMBER.fullmatch(value) is not None
    if need is Need.NAME:
        return _NAME.fullmatch(value) is not None
    if need is Need.PLAIN:
        return _NUMBER.fullmatch(value) is not None or _NAME.fullmatch(value) is not None
    return True


def base(word: str) -> str:
    return os.path.basename(word)


def shell_awaiting_script(words: list[str]) -> str | None:
    """The shell among ``words`` whose script or script file is yet to come, if any.

    A word holding an expansion might be ``-c``, so it is skipped like an option.
    """
    shell: str | None = None
    skip = False
    for word in words:
        if shell is None:
            if base(word) in SHELLS:
                shell = base(word)
            continue
        if skip:
            skip = False
        elif word in ("-o", "+o", "-O", "+O"):
            skip = True
        elif not (word.startswith(("-", "+")) or EXPANDS in word):
            return None  # the script: later words are its positional parameters
    return shell


def argv_refusal(argv: list[str]) -> tuple[int, str] | None:
    """Which argument's placeholder is refused and why, or None (``argv`` has HOLE marks).

    No shell parses an argument vector, but its program may: a placeholder in the program
    name, or in a shell's ``-c`` script or script file, is refused.
    """
    if HOLE in argv[0]:
        return 0, "in the program name: its value would choose what runs"
    for i, word in enumerate(argv):
        if HOLE in word:
            shell = shell_awaiting_script([w.replace(HOLE, "") for w in argv[:i]])
            if shell is not None:
                return i, script_reason(shell)
    return None


def format_word(command: str, args: list[str]) -> str | None:
    """The format argument of ``printf`` (or ``print -f``) among ``args``, if given yet."""
    if command == "print":
        for i, arg in enumerate(args):
            if arg.startswith("-") and "f" in arg and i + 1 < len(args):
                return args[i + 1]
        return None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if arg.startswith("-v"):
            i += 1 if arg != "-v" else 2
            continue
        return arg
    return None


def numeric_format(command: str, args: list[str]) -> bool | None:
    """Whether the format has conversions other than %s %b %q %c (None: no format yet).

    zsh evaluates the arguments of numeric conversions (``%d``, ``%x``, ``%f``, ...) as
    arithmetic; a format not written out in the template counts as numeric.
    """
    fmt = format_word(command, args)
    if fmt is None:
        return None
    if HOLE in fmt or EXPANDS in fmt:
        return True
    return "%" in _TEXT_CONVERSIONS.sub("", fmt)


def script_reason(shell: str) -> str:
    return (
        f"in the script (or script file) of {shell}, which runs it as shell code; pass the "
        f"value as a positional parameter instead ({shell} -c 'echo \"$1\"' {shell} {{key}})"
    )
