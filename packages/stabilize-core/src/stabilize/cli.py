"""The ``stabilize`` command: core's built-in subcommands plus those plugins contribute.

Built-ins are parsed here; any other first word is looked up in the ``stabilize.cli``
entry-point group and handed the rest of the command line untouched, so a plugin parses its
own options. ``--help`` lists plugin commands from metadata alone: no plugin is imported
until its command runs, and heavy imports happen inside the functions that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from importlib.metadata import EntryPoint
from typing import Any

from stabilize._plugins import cli_commands, describe_dist, load_entry_point
from stabilize._version import __version__

PROG = "stabilize"

EXIT_USAGE = 2
"""Exit code for a command line that cannot be parsed, as argparse uses."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stabilize`` command line.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit code: 0 on success, 2 for a usage error, else what the command returned.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-") and args[0] not in _BUILTINS:
        return _run_plugin(args[0], args[1:])
    parser = _build_parser()
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:  # --help, --version and usage errors: a code, not an exit
        return _exit_code(exc.code)
    handler: Callable[[argparse.Namespace], int] | None = getattr(ns, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return handler(ns)


def _cmd_version(ns: argparse.Namespace) -> int:
    print(f"{PROG} {__version__}")
    return 0


def _cmd_demo(ns: argparse.Namespace) -> int:
    from stabilize.demo import run_demo

    return run_demo(db_path=ns.db, workers=ns.workers, out=sys.stdout)


def _cmd_mg_up(ns: argparse.Namespace) -> int:
    from stabilize.backends.migrate import migrate_up
    from stabilize.connect import check_database_url

    try:
        check_database_url(ns.db_url)
        before, after = migrate_up(ns.db_url, ns.schema)
    except Exception as exc:
        return _fail("mg-up", exc, ns.db_url)
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

    try:
        check_database_url(ns.db_url)
        status = migration_status(ns.db_url, ns.schema, must_exist=True)
    except Exception as exc:
        return _fail("mg-status", exc, ns.db_url)
    print(f"database: {status.location}")
    print(f"current version: {status.current}")
    print(f"latest version: {status.latest}")
    if status.too_new:
        print(
            f"{PROG} mg-status: error: the database has schema version {status.current}, "
            f"newer than this stabilize knows ({status.latest}): upgrade stabilize-core",
            file=sys.stderr,
        )
        return 1
    pending = ", ".join(f"{v:04d}" for v in status.pending) or "none"
    print(f"pending: {pending}")
    return 0


def _cmd_purge(ns: argparse.Namespace) -> int:
    from stabilize.connect import check_database_url, open_database

    try:
        check_database_url(ns.db_url)
        store, _queue = open_database(ns.db_url, ns.schema, create=False)
        count = store.purge(
            ns.older_than,
            keep_events=ns.keep_events,
            batch_size=ns.batch_size,
            application=ns.application,
            dry_run=ns.dry_run,
        )
    except Exception as exc:
        return _fail("purge", exc, ns.db_url)
    verb = "would delete" if ns.dry_run else "deleted"
    print(f"{verb} {count} workflow{'' if count == 1 else 's'}")
    return 0


def _fail(command: str, exc: Exception, url: str) -> int:
    """Report a failed database command in one line; the exit code (2: a bad URL)."""
    from stabilize.connect import describe_failure
    from stabilize.errors import DatabaseUrlError

    print(f"{PROG} {command}: error: {describe_failure(exc, url)}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, DatabaseUrlError) else 1


# name -> (summary, handler); a plugin can never replace one of these.
_BUILTINS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "version": ("print the version of stabilize-core", _cmd_version),
    "demo": ("run a small workflow on a local SQLite file and show its progress", _cmd_demo),
    "mg-up": ("apply pending schema migrations to a database", _cmd_mg_up),
    "mg-status": ("show a database's schema version and pending migrations", _cmd_mg_status),
    "purge": ("delete completed workflows older than a given age", _cmd_purge),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="stabilize: a durable workflow engine for Python.",
        epilog=f"Run '{PROG} <command> --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="<command>")

    for name, (summary, handler) in _BUILTINS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(handler=handler)
        if name in ("mg-up", "mg-status", "purge"):
            sub.add_argument(
                "--db-url",
                metavar="URL",
                required=True,
                help="postgresql://user:password@host:5432/dbname or sqlite:///path/to/file.db",
            )
            sub.add_argument(
                "--schema",
                metavar="NAME",
                default=None,
                help="PostgreSQL schema (default: the connection's, usually public)",
            )
        if name == "purge":
            _add_purge_arguments(sub)
        if name == "demo":
            sub.add_argument(
                "--db",
                metavar="PATH",
                default="stabilize-demo.db",
                help="SQLite file to create or reuse (default: %(default)s in this directory)",
            )
            sub.add_argument(
                "--workers",
                metavar="N",
                type=_positive_int,
                default=4,
                help="worker threads (default: %(default)s)",
            )

    # Listed for --help only: main() dispatches plugin commands before argparse runs, so
    # these parsers never parse anything. Nothing is loaded to describe them.
    for name, ep in sorted(_plugin_commands().items()):
        commands.add_parser(name, help=f"(from {describe_dist(ep)})", add_help=False)
    return parser


def _add_purge_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--older-than",
        metavar="DURATION",
        type=_duration,
        required=True,
        help="delete workflows that ended longer ago than this: 30d, 12h, 45m or 90s",
    )
    sub.add_argument(
        "--keep-events",
        action="store_true",
        help="keep the workflows' events (default: delete them with the workflows)",
    )
    sub.add_argument(
        "--batch-size",
        metavar="N",
        type=_positive_int,
        default=500,
        help="workflows deleted per transaction (default: %(default)s)",
    )
    sub.add_argument(
        "--application",
        metavar="APP",
        default=None,
        help="only this application's workflows",
    )
    sub.add_argument(
        "--dry-run",
        action="store_true",
        help="count the workflows that would be deleted, delete nothing",
    )


def _plugin_commands() -> dict[str, EntryPoint]:
    return {name: ep for name, ep in cli_commands().items() if name not in _BUILTINS}


def _run_plugin(name: str, argv: list[str]) -> int:
    ep = _plugin_commands().get(name)
    if ep is None:
        known = ", ".join([*_BUILTINS, *sorted(_plugin_commands())])
        _build_parser().print_usage(sys.stderr)
        print(f"{PROG}: error: unknown command {name!r} (choose from {known})", file=sys.stderr)
        return EXIT_USAGE
    try:
        command = load_entry_point(ep)
    except ImportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    try:
        result: Any = command(argv)
    except SystemExit as exc:  # a plugin that exits through argparse or sys.exit()
        return _exit_code(exc.code)
    return 0 if result is None else int(result)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") convention
    return 1


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
