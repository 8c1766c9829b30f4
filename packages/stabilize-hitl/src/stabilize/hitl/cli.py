"""``stabilize approve`` and ``stabilize reject``: decide an approval gate from a shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def approve_main(argv: Sequence[str]) -> int:
    """Run ``stabilize approve``."""
    return _main("approve", argv)


def reject_main(argv: Sequence[str]) -> int:
    """Run ``stabilize reject``."""
    return _main("reject", argv)


def _main(decision: str, argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"stabilize {decision}",
        description=f"{decision.title()} a waiting approval gate of a workflow.",
    )
    parser.add_argument("workflow_id", help="the workflow id")
    parser.add_argument("stage", help="the gate's stage id or ref_id")
    parser.add_argument("--db-url", required=True, help="sqlite:///path.db or postgresql://...")
    parser.add_argument("--schema", default=None, help="PostgreSQL schema")
    parser.add_argument("--user", default=None, help="who decides (recorded)")
    parser.add_argument("--note", default=None, help="a note recorded with the decision")
    parser.add_argument("--data", default=None, help="JSON object passed along with it")
    ns = parser.parse_args(list(argv))
    prog = f"stabilize {decision}"
    try:
        data = json.loads(ns.data) if ns.data else {}
    except json.JSONDecodeError as exc:
        print(f"{prog}: error: --data is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(data, dict):
        print(f"{prog}: error: --data must be a JSON object", file=sys.stderr)
        return 2

    from stabilize.connect import check_database_url, describe_failure, open_database
    from stabilize.errors import DatabaseUrlError
    from stabilize.hitl import approve, reject

    try:
        check_database_url(ns.db_url)
        # Open only: a mistyped path or schema must not become a new, empty database.
        _, queue = open_database(ns.db_url, ns.schema, create=False)
        act = approve if decision == "approve" else reject
        act(queue, ns.workflow_id, ns.stage, data, user=ns.user, note=ns.note)
    except Exception as exc:
        print(f"{prog}: error: {describe_failure(exc, ns.db_url)}", file=sys.stderr)
        return 2 if isinstance(exc, DatabaseUrlError) else 1
    print(f"{decision}d stage {ns.stage} of workflow {ns.workflow_id}")
    return 0
