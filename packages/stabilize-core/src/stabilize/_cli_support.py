"""What every ``stabilize`` command shares: its parser, its error line and its exit codes.

Core's built-ins and the plugin commands (``serve``, ``approve``, ``reject``, ``monitor``)
build their parsers with :func:`command_parser` and run through :func:`run_command`, so
that they all read and fail alike:

- ``stabilize <command> --help`` starts with a one-sentence summary and ends with an
  ``Example:`` section; metavars are upper case (``--db-url URL``) and defaults read
  ``(default: ...)``.
- A failure is one line on stderr, ``stabilize <command>: error: ...``, with exit code 2
  for a usage error (options, a bad URL or value) and 1 for a failure (a missing
  database, a server that is down, an unknown workflow or stage). No traceback, unless
  ``--verbose`` asks for it.

Plugins import what they need of it from :mod:`stabilize.cli`, the public module.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

from stabilize.backends._schemes import driver_modules
from stabilize.connect import describe_failure
from stabilize.errors import DatabaseUrlError, StabilizeError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "UsageError",
    "add_database_options",
    "command_parser",
    "error_line",
    "exit_code",
    "run_command",
]

PROG = "stabilize"

EXIT_OK = 0
"""The command did what it was asked."""

EXIT_FAILURE = 1
"""The command could not do it: a missing database, a server down, an unknown stage."""

EXIT_USAGE = 2
"""The command line is wrong: an option, a URL or a value (as argparse uses)."""

DB_URL_HELP = (
    "the database: sqlite:///path/to/file.db or postgresql://user:password@host:5432/dbname"
)
SCHEMA_HELP = "PostgreSQL schema (default: the connection's, usually public)"


class CommandError(Exception):
    """An expected failure of a command, reported in one line without a traceback.

    Args:
        message: What went wrong, in words for the person at the shell.
        usage: True when the command line is at fault (exit 2 instead of 1).
    """

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.exit_code = EXIT_USAGE if usage else EXIT_FAILURE


class UsageError(CommandError):
    """The command line cannot be parsed (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, usage=True)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs kept as written; a default shown as ``(default: ...)`` unless already said."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or default == []
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)"

    def add_argument(self, action: argparse.Action) -> None:
        """Make room for subcommand names, which argparse measures two columns short."""
        super().add_argument(action)
        get_subactions = getattr(action, "_get_subactions", None)
        if action.help is argparse.SUPPRESS or get_subactions is None:
            return
        for sub in get_subactions():
            width = len(self._format_action_invocation(sub))
            width += self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, width)


class CommandParser(argparse.ArgumentParser):
    """An argparse parser whose errors are raised (:class:`UsageError`), not printed."""

    def error(self, message: str) -> NoReturn:
        """Raise the usage error instead of printing the usage and exiting."""
        raise UsageError(message)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse as argparse does, but keep ``--`` when it is an option's value.

        argparse before Python 3.12 drops it from ``--db-url=--`` and hands the command an
        empty list instead of a string; the value is restored (and converted) here, so
        that the command judges ``--`` as it would any other value.
        """
        ns, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            dest = action.dest
            if action.nargs is not None or not action.option_strings or action.default == []:
                continue
            if getattr(ns, dest, None) == []:
                value: object = "--"
                if callable(action.type):
                    try:
                        value = action.type("--")
                    except (TypeError, ValueError, argparse.ArgumentTypeError):
                        self.error(f"argument {action.option_strings[0]}: invalid value: '--'")
                if action.choices is not None and value not in action.choices:
                    allowed = ", ".join(repr(choice) for choice in action.choices)
                    self.error(
                        f"argument {action.option_strings[0]}: invalid choice: '--' "
                        f"(choose from {allowed})"
                    )
                setattr(ns, dest, value)
        return ns, extras


def command_parser(
    command: str,
    summary: str,
    *,
    examples: Sequence[str],
    details: str | None = None,
    notes: str | None = None,
    verbose: bool = True,
) -> CommandParser:
    """The parser of ``stabilize <command>``, in the style every command shares.

    Args:
        command: The subcommand (``purge``, ``serve``...); empty for ``stabilize`` itself.
        summary: One sentence saying what the command does (also ``stabilize --help``'s).
        examples: Command lines shown under ``Example:`` at the end of ``--help``.
        details: More paragraphs after the summary.
        notes: Text after the examples (keys, caveats), kept as written.
        verbose: Add ``-v/--verbose`` (show the traceback of an error).

    Returns:
        The parser; add the command's own arguments to it.
    """
    epilog = "Example:\n" + "\n".join(f"  {line}" for line in examples)
    if notes:
        epilog += "\n\n" + notes.rstrip("\n")
    parser = CommandParser(
        prog=f"{PROG} {command}".strip(),
        description=summary if details is None else f"{summary}\n\n{details}",
        epilog=epilog,
        formatter_class=_HelpFormatter,
    )
    if verbose:
        parser.add_argument(
            "-v", "--verbose", action="store_true", help="show the traceback of an error"
        )
    return parser


def add_database_options(
    parser: argparse.ArgumentParser, *, schema_help: str = SCHEMA_HELP
) -> None:
    """Add ``--db-url URL`` (required) and ``--schema NAME``, worded alike everywhere.

    Args:
        parser: The command's parser (from :func:`command_parser`).
        schema_help: The help of ``--schema``, for a command that says more about it.
    """
    parser.add_argument("--db-url", metavar="URL", required=True, help=DB_URL_HELP)
    parser.add_argument("--schema", metavar="NAME", default=None, help=schema_help)


def error_line(command: str, message: str) -> str:
    """``stabilize <command>: error: <message>``, folded into one line."""
    return f"{PROG} {command}: error: {' '.join(message.split())}"


def run_command(
    command: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    handler: Callable[[argparse.Namespace], int | None],
    *,
    stderr: TextIO | None = None,
) -> int:
    """Parse ``argv`` and run ``handler``, turning every failure into one line and a code.

    Args:
        command: The subcommand, for the error line.
        parser: From :func:`command_parser` (or any parser raising :class:`UsageError`).
        argv: The arguments after the subcommand.
        handler: Does the work; returns the exit code (None: 0). It may raise
            :class:`CommandError` for an expected failure; any other exception is
            described in one line too (a database one by :func:`describe_failure`,
            naming the server of ``--db-url``).
        stderr: Where errors go (default: ``sys.stderr`` at the time of the call).

    Returns:
        The exit code: 0, 1 for a failure, 2 for a usage error (or the handler's own).
    """
    err = sys.stderr if stderr is None else stderr
    verbose = "-v" in argv or "--verbose" in argv
    try:
        ns = parser.parse_args(list(argv))
    except CommandError as exc:
        _report(command, exc, None, verbose, err)
        return exc.exit_code
    except SystemExit as exc:  # --help and --version
        return exit_code(exc.code)
    url = getattr(ns, "db_url", None)
    try:
        result = handler(ns)
    except KeyboardInterrupt:
        print(error_line(command, "interrupted"), file=err)
        return 130
    except Exception as exc:
        return _report(command, exc, url, getattr(ns, "verbose", verbose), err)
    return EXIT_OK if result is None else int(result)


def exit_code(code: object) -> int:
    """The exit code a ``SystemExit`` carries (``sys.exit("message")`` prints it: 1)."""
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILURE


def _report(command: str, exc: Exception, url: str | None, verbose: bool, err: TextIO) -> int:
    if verbose:
        traceback.print_exception(exc, file=err)
    if isinstance(exc, CommandError):
        print(error_line(command, str(exc)), file=err)
        return exc.exit_code
    message = describe_failure(exc, url)
    if not _expected(exc) and not verbose:
        message += " (run again with --verbose for the traceback)"
    print(error_line(command, message), file=err)
    return EXIT_USAGE if isinstance(exc, DatabaseUrlError) else EXIT_FAILURE


def _expected(exc: BaseException) -> bool:
    """True for failures of the world (files, servers, data), false for likely bugs."""
    if isinstance(exc, StabilizeError | OSError | ImportError | ValueError):
        return True
    return type(exc).__module__.split(".")[0] in driver_modules()
