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

from stabilize_monitor._model import STATUS_FILTERS, Filters

PROG = "stabilize monitor"

EXAMPLES = """\
examples:
  stabilize monitor --db-url sqlite:///stabilize.db
  stabilize monitor --db-url postgresql://app@db:5432/app --app billing --status failed
  stabilize monitor --db-url sqlite:///stabilize.db --status running --refresh 5
  stabilize monitor --db-url sqlite:///stabilize.db | cat     (no terminal: a summary)

keys: q quit, r refresh, / search, a next application, s next status filter,
      enter open a workflow, escape back; in a workflow: [ ] scrub its events,
      y approve, n reject, g signal, c cancel, x cancel stage, p pause or resume.
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``stabilize monitor``'s options."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "A live terminal dashboard of a stabilize database: workflows, the queue and "
            "its workers, a workflow's stage graph, its events and actions on it. Without "
            "a terminal (stdin or stdout not a TTY) it prints a one-shot summary and exits."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db-url",
        metavar="URL",
        required=True,
        help="the database to watch, e.g. sqlite:///stabilize.db or "
        "postgresql://user:password@host:5432/dbname",
    )
    parser.add_argument(
        "--schema",
        metavar="NAME",
        default=None,
        help="PostgreSQL schema (default: the connection's, usually public), e.g. --schema jobs",
    )
    parser.add_argument(
        "--app",
        metavar="APP",
        default=None,
        help="only this application's workflows (default: all), e.g. --app billing",
    )
    parser.add_argument(
        "--status",
        choices=list(STATUS_FILTERS),
        default="all",
        help="which workflows to list: all, running (incl. suspended and paused), failed "
        "(terminal, stopped, canceled) or recent (stored in the last day); "
        "default: %(default)s, e.g. --status failed",
    )
    parser.add_argument(
        "--refresh",
        metavar="SECONDS",
        type=_positive_float,
        default=2.0,
        help="how often to check for changes nothing announced (commits wake the monitor "
        "at once); default: %(default)s, e.g. --refresh 5",
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
    try:
        ns = build_parser().parse_args(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    filters = Filters(application=ns.app, status=ns.status)

    from stabilize.connect import describe_failure
    from stabilize.errors import DatabaseUrlError
    from stabilize_monitor._source import DatabaseSource

    try:
        # Open only: a mistyped path or schema must not become a new, empty database.
        source = DatabaseSource.open(ns.db_url, ns.schema)
        if not _interactive(sys.stdin, sys.stdout):
            from stabilize_monitor._summary import summary_text

            sys.stdout.write(summary_text(source, filters, time.time()))
            sys.stdout.flush()
            return 0
    except Exception as exc:
        print(f"{PROG}: error: {describe_failure(exc, ns.db_url)}", file=sys.stderr)
        return 2 if isinstance(exc, DatabaseUrlError) else 1

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
