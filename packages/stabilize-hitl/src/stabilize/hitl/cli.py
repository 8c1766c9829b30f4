"""``stabilize approve`` and ``stabilize reject``: decide an approval gate from a shell."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stabilize.cli import (
    CommandError,
    add_database_options,
    command_parser,
    run_command,
)

if TYPE_CHECKING:
    from stabilize.queue.queue import Queue

SUMMARIES = {
    "approve": "Approve a workflow's waiting approval gate.",
    "reject": "Reject a workflow's waiting approval gate.",
}


def approve_main(argv: Sequence[str]) -> int:
    """Run ``stabilize approve``."""
    return _main("approve", argv)


def reject_main(argv: Sequence[str]) -> int:
    """Run ``stabilize reject``."""
    return _main("reject", argv)


def _parser(decision: str) -> argparse.ArgumentParser:
    parser = command_parser(
        decision,
        SUMMARIES[decision],
        details=(
            "The decision is recorded with the stage and in the event log; a worker running "
            "on the same database then resumes the workflow."
        ),
        examples=(
            f"stabilize {decision} wf_01J9Z3 approve --db-url sqlite:///stabilize.db "
            '--user alice --note "numbers checked"',
            f"stabilize {decision} wf_01J9Z3 approve --db-url postgresql://app@db:5432/app "
            "--schema jobs --data '{\"ticket\": 7}'",
        ),
    )
    parser.add_argument("workflow_id", metavar="WORKFLOW", help="the workflow id")
    parser.add_argument("stage", metavar="STAGE", help="the gate's stage id or ref_id")
    add_database_options(parser)
    parser.add_argument(
        "--user", metavar="NAME", default=None, help="who decides, recorded with the decision"
    )
    parser.add_argument(
        "--note", metavar="TEXT", default=None, help="a note recorded with the decision"
    )
    parser.add_argument(
        "--data", metavar="JSON", default=None, help="a JSON object passed on to the workflow"
    )
    return parser


def _main(decision: str, argv: Sequence[str]) -> int:
    return run_command(decision, _parser(decision), argv, lambda ns: _decide(decision, ns))


def _decide(decision: str, ns: argparse.Namespace) -> int:
    data = _data(ns.data)

    from stabilize.connect import check_database_url, open_database
    from stabilize.hitl import approve, reject

    check_database_url(ns.db_url)
    # Open only: a mistyped path or schema must not become a new, empty database.
    _, queue = open_database(ns.db_url, ns.schema, create=False)
    act = approve if decision == "approve" else reject
    act(queue, ns.workflow_id, ns.stage, data, user=ns.user, note=ns.note)
    print(f"{decision}d stage {ns.stage} of workflow {ns.workflow_id}")
    print(_resume_note(queue))
    return 0


def _data(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--data is not JSON: {exc}", usage=True) from None
    if not isinstance(data, dict):
        raise CommandError(
            f"--data must be a JSON object like '{{\"key\": 1}}', got {text!r}", usage=True
        )
    return data


def _resume_note(queue: Queue) -> str:
    """Who will carry the workflow on: a worker, if one is seen on this database."""
    with queue.backend.read() as tx:
        owners = tx.lease_owners(int(time.time() * 1000))
    if owners:
        seen = "1 worker is" if len(owners) == 1 else f"{len(owners)} workers are"
        return (
            f"A worker running on this database will resume the workflow ({seen} busy on it now)."
        )
    return (
        "A worker running on this database will resume the workflow (none is busy on it "
        "right now; an idle worker shows nothing, so start one if none runs)."
    )
