"""A worker process for the research analyst: ``python -m examples.research_analyst.worker``.

It registers the analyst's tasks on the database and works until the workflow ends. The
chaos run starts one with ``--hang`` (its first web_search blocks after writing a marker
file), kills it with SIGKILL, and starts another, which adopts the interrupted work.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from examples.research_analyst.flow import register
from examples.research_analyst.ledger import Ledger
from examples.research_analyst.model import live_client, make_tools, scripted_client

from stabilize import QueueProcessorConfig, WorkflowEngine
from stabilize.llm import LLMClient

# Short leases so that work held by a dead worker is adopted quickly; recover_on_start
# releases at once the leases of dead processes on this host.
CONFIG = QueueProcessorConfig(lease_duration_seconds=3, recover_on_start=True, max_workers=8)


def client_for(workdir: Path, model: str | None, base_url: str | None, api: str) -> LLMClient:
    ledger = Ledger(workdir / "ledger.jsonl")
    if model:
        return live_client(ledger, model, base_url, api)
    return scripted_client(ledger)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db_url")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("workflow_id")
    parser.add_argument("--hang", action="store_true", help="block in the first web_search")
    parser.add_argument("--model", default=None)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--api", default="openai")
    args = parser.parse_args(argv)

    ledger = Ledger(args.workdir / "ledger.jsonl")
    marker = args.workdir / "tool-started" if args.hang else None
    client = client_for(args.workdir, args.model, args.base_url, args.api)
    with WorkflowEngine(args.db_url, config=CONFIG) as engine:
        register(engine, client, make_tools(ledger, marker))
        engine.processor.start()
        deadline = time.monotonic() + 600
        while not engine.retrieve(args.workflow_id).status.is_complete:
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
