"""A worker process for the agent team: ``python -m examples.agent_team.worker``.

It registers the team's tasks on the database and works until the workflow ends. It
finishes a run approved by a human (``--wait-for-human``), and the chaos run starts one
with ``--hang`` (the coder's first ``write_file`` blocks after writing a marker file),
kills it with SIGKILL, and starts another, which adopts the interrupted work.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from examples._chaos import Ledger
from examples.agent_team.team import client_for, make_tools, register

from stabilize import QueueProcessorConfig, WorkflowEngine

# Short leases so that work held by a dead worker is adopted quickly; recover_on_start
# releases at once the leases of dead processes on this host.
CONFIG = QueueProcessorConfig(lease_duration_seconds=3, recover_on_start=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.agent_team.worker")
    parser.add_argument("db_url")
    parser.add_argument("project", type=Path, help="the project folder of the run")
    parser.add_argument("workflow_id")
    parser.add_argument("--ledger", type=Path, help="record every model and tool call here")
    parser.add_argument("--hang", type=Path, metavar="MARKER", help="block in the coder's write")
    parser.add_argument("--model", default=None)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--api", choices=["openai", "ollama"], default="openai")
    args = parser.parse_args(argv)

    ledger = Ledger(args.ledger) if args.ledger else None
    client = client_for(args.model, args.base_url, args.api, ledger)
    with WorkflowEngine(args.db_url, config=CONFIG) as engine:
        register(engine, client, make_tools(args.project, ledger, args.hang))
        engine.processor.start()
        deadline = time.monotonic() + 600
        while not engine.retrieve(args.workflow_id).status.is_complete:
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
