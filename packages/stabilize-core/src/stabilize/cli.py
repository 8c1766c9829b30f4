"""The ``stabilize`` command: core's built-in subcommands plus those plugins contribute.

Built-ins are parsed here; any other first word is looked up in the ``stabilize.cli``
entry-point group and handed the rest of the command line untouched, so a plugin parses its
own options. ``--help`` lists plugin commands from metadata alone: no plugin is imported
until its command runs, and heavy imports happen inside the functions that need them.

A plugin's command (``main(argv) -> int``) builds its parser with :func:`command_parser`
(and :func:`add_database_options` for ``--db-url``/``--schema``) and runs its handler
through :func:`run_command`, raising :class:`CommandError` for an expected failure: it then
reads, documents itself and fails like every built-in command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from importlib.metadata import EntryPoint
from typing import Any

from stabilize._cli_support import (
    EXIT_USAGE,
    CommandError,
    UsageError,
    add_database_options,
    command_parser,
    error_line,
    exit_code,
    run_command,
)
from stabilize._plugins import cli_commands, describe_dist, load_entry_point
from stabilize._version import __version__

__all__ = ["CommandError", "add_database_options", "command_parser", "main", "run_command"]

PROG = "stabilize"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stabilize`` command line.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit code: 0 on success, 2 for a usage error, 1 for a failure, else what a
        plugin command returned.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):
        if args[0] in _BUILTINS:
            summary, handler, configure, examples = _BUILTINS[args[0]]
            sub = command_parser(args[0], summary, examples=examples)
            configure(sub)
            return run_command(args[0], sub, args[1:], handler)
        return _run_plugin(args[0], args[1:])
    parser = _build_parser()
    try:
        parser.parse_args(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return exit_code(exc.code)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _cmd_version(ns: argparse.Namespace) -> int:
    print(f"{PROG} {__version__}")
    return 0


def _cmd_prompt(ns: argparse.Namespace) -> int:
    from stabilize._prompt import render

    sys.stdout.write(render())
    return 0


def _cmd_demo(ns: argparse.Namespace) -> int:
    from stabilize.demo import run_demo

    return run_demo(db_path=ns.db, workers=ns.workers, out=sys.stdout)


def _cmd_mg_up(ns: argparse.Namespace) -> int:
    from stabilize.backends.migrate import migrate_up
    from stabilize.connect import check_database_url

    check_database_url(ns.db_url)
    before, after = migrate_up(ns.db_url, ns.schema)
    print(f"database: {after.location}")
    if before.pending:
        for version in before.pending:
            print(f"applied: {version:04d}")
    else:
        print("nothing to apply")
    print(f"schema version: {after.current} (latest {after.latest})")
    return 0


def _cmd_mg_status(ns: argparse.Namespace) -> int:
    from stabilize.backends.migrate import migration_status
    from stabilize.connect import check_database_url

    check_database_url(ns.db_url)
    status = migration_status(ns.db_url, ns.schema, must_exist=True)
    print(f"database: {status.location}")
    print(f"current version: {status.current}")
    print(f"latest version: {status.latest}")
    if status.too_new:
        raise CommandError(
            f"the database has schema version {status.current}, "
            f"newer than this stabilize knows ({status.latest}): upgrade stabilize-core"
        )
    pending = ", ".join(f"{v:04d}" for v in status.pending) or "none"
    print(f"pending: {pending}")
    return 0


def _cmd_purge(ns: argparse.Namespace) -> int:
    from stabilize.connect import check_database_url, open_database

    check_database_url(ns.db_url)
    store, _queue = open_database(ns.db_url, ns.schema, create=False)
    count = store.purge(
        ns.older_than,
        keep_events=ns.keep_events,
        batch_size=ns.batch_size,
        application=ns.application,
        dry_run=ns.dry_run,
    )
    verb = "would delete" if ns.dry_run else "deleted"
    print(f"{verb} {count} workflow{'' if count == 1 else 's'}")
    return 0


def _no_options(parser: argparse.ArgumentParser) -> None:
    pass


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        default="stabilize-demo.db",
        help="SQLite file to create or reuse, in this directory unless a path is given",
    )
    parser.add_argument(
        "--workers", metavar="N", type=_positive_int, default=4, help="worker threads"
    )


def _add_mg_up_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_options(parser)


def _add_purge_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_options(parser)
    parser.add_argument(
        "--older-than",
        metavar="DURATION",
        type=_duration,
        required=True,
        help="delete workflows that ended longer ago than this: 30d, 12h, 45m or 90s",
    )
    parser.add_argument(
        "--keep-events",
        action="store_true",
        help="keep the workflows' events (default: delete them with the workflows)",
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=_positive_int,
        default=500,
        help="workflows deleted per transaction",
    )
    parser.add_argument(
        "--application",
        metavar="APP",
        default=None,
        help="only this application's workflows (default: every application's)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="count the workflows that would be deleted, delete nothing",
    )


_Handler = Callable[[argparse.Namespace], int]
_Configure = Callable[[argparse.ArgumentParser], None]

# name -> (one-sentence summary, handler, options, examples); a plugin cannot replace one.
_BUILTINS: dict[str, tuple[str, _Handler, _Configure, tuple[str, ...]]] = {
    "version": (
        "Print the version of stabilize-core.",
        _cmd_version,
        _no_options,
        ("stabilize version",),
    ),
    "prompt": (
        "Print a Markdown reference of the installed stabilize packages for a coding agent.",
        _cmd_prompt,
        _no_options,
        ("stabilize prompt > stabilize-reference.md",),
    ),
    "demo": (
        "Run a small workflow on a local SQLite file and show its progress.",
        _cmd_demo,
        _add_demo_arguments,
        ("stabilize demo --db /tmp/demo.db --workers 2",),
    ),
    "mg-up": (
        "Create a database or apply its pending schema migrations.",
        _cmd_mg_up,
        _add_mg_up_arguments,
        (
            "stabilize mg-up --db-url sqlite:///stabilize.db",
            "stabilize mg-up --db-url postgresql://app@db:5432/app --schema jobs",
        ),
    ),
    "mg-status": (
        "Show a database's schema version and pending migrations.",
        _cmd_mg_status,
        _add_mg_up_arguments,
        ("stabilize mg-status --db-url sqlite:///stabilize.db",),
    ),
    "purge": (
        "Delete finished workflows older than a given age.",
        _cmd_purge,
        _add_purge_arguments,
        (
            "stabilize purge --db-url sqlite:///stabilize.db --older-than 30d --dry-run",
            "stabilize purge --db-url postgresql://app@db:5432/app --older-than 12h",
        ),
    ),
}

_KNOWN_PLUGINS = {
    "serve": (
        "stabilize-stream",
        "Serve a database's workflow events over WebSocket, with a live timeline page.",
    ),
    "approve": ("stabilize-hitl", "Approve a workflow's waiting approval gate."),
    "reject": ("stabilize-hitl", "Reject a workflow's waiting approval gate."),
    "monitor": (
        "stabilize-monitor",
        "Watch a stabilize database live in the terminal: workflows, the queue and workers.",
    ),
}
"""Our plugin commands: the distribution to install and the one-sentence summary, so that
``--help`` describes them without loading them and a missing one gets an install hint."""


def _build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "",
        "stabilize: a durable workflow engine for Python.",
        examples=(
            "stabilize demo",
            "stabilize mg-up --db-url sqlite:///stabilize.db",
            f"{PROG} <command> --help    (the options of a command)",
        ),
        verbose=False,
    )
    commands = parser.add_subparsers(title="commands", metavar="<command>")
    for name, (summary, *_rest) in _BUILTINS.items():
        commands.add_parser(name, help=summary, add_help=False)
    # Listed for --help only: main() dispatches every command before this parser runs.
    for name, ep in sorted(_plugin_commands().items()):
        summary = _KNOWN_PLUGINS.get(name, ("", "A plugin command."))[1]
        commands.add_parser(name, help=f"{summary} (from {describe_dist(ep)})", add_help=False)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def _plugin_commands() -> dict[str, EntryPoint]:
    return {name: ep for name, ep in cli_commands().items() if name not in _BUILTINS}


def _run_plugin(name: str, argv: list[str]) -> int:
    ep = _plugin_commands().get(name)
    if ep is None and name in _KNOWN_PLUGINS:
        from stabilize._plugins import DISABLE_AUTOLOAD_ENV, autoload_disabled

        dist = _KNOWN_PLUGINS[name][0]
        hint = f"pip install {dist}"
        if autoload_disabled():
            hint += f" (or unset {DISABLE_AUTOLOAD_ENV}, which hides installed plugins)"
        print(
            error_line(name, f"this command comes with {dist}, which is not installed: {hint}"),
            file=sys.stderr,
        )
        return 1
    if ep is None:
        known = ", ".join([*_BUILTINS, *sorted(_plugin_commands())])
        print(f"{PROG}: error: unknown command {name!r} (choose from {known})", file=sys.stderr)
        return EXIT_USAGE
    try:
        command = load_entry_point(ep)
    except ImportError as exc:
        print(error_line(name, str(exc)), file=sys.stderr)
        return 1
    try:
        result: Any = command(argv)
    except SystemExit as exc:  # a plugin that exits through argparse or sys.exit()
        return exit_code(exc.code)
    return 0 if result is None else int(result)


_MAX_INT = 2**31 - 1
"""Largest count an option takes (a bigger one is a typo, and overflows SQL integers)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    if value > _MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_INT}, got {value}")
    return value


_DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def _duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``45m`` or ``90s`` as a timedelta."""
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in _DURATION_UNITS or not (number.isascii() and number.isdigit()):
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (write a whole number and a unit: 30d, 12h, 45m, 90s)"
        )
    try:
        return timedelta(**{_DURATION_UNITS[unit]: int(number)})
    except OverflowError:
        raise argparse.ArgumentTypeError(
            f"duration out of range: {text!r} (at most {timedelta.max.days} days)"
        ) from None
