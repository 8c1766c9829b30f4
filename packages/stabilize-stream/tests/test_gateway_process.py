"""The gateway streams what workers in other processes commit (PostgreSQL: woken by NOTIFY)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make gateway_helpers importable

from gateway_helpers import GatewayFactory, logged, open_client, pipeline, sequences

if TYPE_CHECKING:
    from conftest import StreamEngine

pytest_plugins = ["gateway_fixtures"]

WORKER = Path(__file__).with_name("stream_worker.py")
LONG_POLL = 60.0
"""PostgreSQL: a poll interval the test never waits out (only notifications wake the feed)."""


async def test_events_of_another_process(
    db: StreamEngine, start_gateway: GatewayFactory, spawn: list[subprocess.Popen[str]]
) -> None:
    # On PostgreSQL nothing but a notification can wake the feed before the hang guard.
    poll = LONG_POLL if db.kind == "postgres" else None
    gateway = await start_gateway(db.events, poll_interval=poll)
    wf = pipeline("step", "step", "step", application="stream-tests")
    db.orchestrator().start(wf)  # nothing in this process runs it
    args = [sys.executable, str(WORKER), db.kind, db.url]
    if db.schema is not None:
        args.append(db.schema)
    async with open_client(gateway.url) as one, open_client(gateway.url) as every:
        await one.subscribe("one", workflow_id=wf.id)
        await every.subscribe("app", application="stream-tests")
        first = await one.recv()
        assert first["event_type"] == "workflow.created"
        spawn.append(
            subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
        rest = await one.until_terminal()
        by_app = await every.until_terminal(wf.id)
    assert sequences([first, *rest]) == logged(db, wf.id)
    assert sequences(by_app) == logged(db, wf.id)
    _, err = spawn[0].communicate(timeout=30)
    assert spawn[0].returncode == 0, err
