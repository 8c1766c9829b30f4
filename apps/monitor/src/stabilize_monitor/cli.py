"""``stabilize monitor``: the command (a ``stabilize.cli`` plugin).

Textual is imported only when the dashboard starts, so ``stabilize --help`` and the
one-shot summary never load it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from stabilize.cli import add_database_options, command_parser, run_command
from stabilize_monitor._model import STATUS_FILTERS, Filters

COMMAND = "monitor"

SUMMARY = "Watch a stabilize database live in the terminal: workflows, the queue and workers."

DETAILS = (
    "Open a workflow to see its stage graph, a stage's context and outputs, its progress "
    "messages, and to step through its event log; approve or reject gates, send signals, "
    "cancel, pause and resume, each confirmed. Without a terminal (stdin or stdout not a "
    "TTY) it prints a one-shot summary and exits."
)

EXAMPLES = (
    "stabilize monitor --db-url sqlite:///stabilize.db",
    "stabilize monitor --db-url postgresql://app@db:5432/app --app billing --status failed",
    "stabilize monitor --db-url sqlite:///stabilize.db --status running --refresh 5",
    "stabilize monitor --db-url sqlite:///stabilize.db | cat     (no terminal: a summary)",
)

KEYS = """\
Keys: q quit, r refresh, / search, a next application, s next status filter,
      enter open a workflow, escape back; in a workflow: [ ] step through its events,
      l live, y approve, n reject, g signal, c cancel, x cancel stage, p pause or resume."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``stabilize monitor``'s options."""
    parser = command_parser(COMMAND, SUMMARY, details=DETAILS, examples=EXAMPLES, notes=KEYS)
    add_database_options(
        parser,
        schema_help="PostgreSQL schema (default: the connection's, usually public), "
        "e.g. --schema jobs",
    )
    parser.add_argument(
        "--app",
        metavar="APP",
        default=None,
        help="only this application's workflows (default: all), e.g. --app billing",
    )
    parser.add_argument(
        "--status",
        metavar="STATUS",
        choices=list(STATUS_FILTERS),
        default="all",
        help="which workflows to list: all, running (with suspended and paused), failed "
        "(terminal, stopped, canceled) or recent (stored in the last day), e.g. --status failed",
    )
    parser.add_argument(
        "--refresh",
        metavar="SECONDS",
        type=_positive_float,
        default=2.0,
        help="how often to check for changes nothing announced (commits wake the monitor "
        "at once), e.g. --refresh 5",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stabilize monitor``.

    Args:
        argv: The arguments after ``monitor``; ``sys.argv[1:]`` when None.

    Returns:
        0 on success (``q`` quits with 0), 1 when the database cannot be opened or read,
        2 for a usage error (a bad option or ``--db-url``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return run_command(COMMAND, build_parser(), args, _run)


def _run(ns: argparse.Namespace) -> int:
    from stabilize_monitor._source import DatabaseSource

    filters = Filters(application=ns.app, status=ns.status)
    # Open only: a mistyped path or schema must not become a new, empty database.
    source = DatabaseSource.open(ns.db_url, ns.schema)
    if not _interactive(sys.stdin, sys.stdout):
        from stabilize_monitor._summary import summary_text

        sys.stdout.write(summary_text(source, filters, time.time()))
        sys.stdout.flush()
        return 0

    from stabilize_monitor.app import MonitorApp

    app = MonitorApp(source, filters=filters, refresh=ns.refresh)
    app.run()
    return app.return_code or 0


def _interactive(stdin: TextIO, stdout: TextIO) -> bool:
    try:
        return stdin.isatty() and stdout.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value
