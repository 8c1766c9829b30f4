"""A client that does not read: its subscription resyncs; nobody else is affected."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make gateway_helpers importable

from gateway_helpers import (
    Client,
    GatewayFactory,
    engine_registry,
    logged,
    open_client,
    pipeline,
    run_engine,
    sequences,
    stalled_socket,
    until,
)

from stabilize import StageExecution, TaskResult
from stabilize.events import emit_progress

if TYPE_CHECKING:
    from conftest import StreamEngine

pytest_plugins = ["gateway_fixtures"]

pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)

STAGES = 30
PAYLOAD = 8 * 1024
"""Bytes of progress data per stage: in all, far more than a stalled client's socket and
queue hold."""


def fat(stage: StageExecution) -> TaskResult:
    emit_progress(stage, "bulk", blob="x" * PAYLOAD)
    return TaskResult.success()


def started(ref_id: str) -> Any:
    def done(events: list[dict[str, Any]]) -> bool:
        return bool(events) and (
            events[-1]["event_type"] == "stage.started"
            and events[-1]["data"].get("ref_id") == ref_id
        )

    return done


async def drain_to_resync(client: Client) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What a stalled client finally reads: events, then the resync frame."""
    events: list[dict[str, Any]] = []
    while (frame := await client.recv())["type"] == "event":
        events.append(frame)
    assert frame["type"] == "resync", frame
    return events, frame


async def test_slow_consumer_gets_resync_and_resumes_without_gap(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    registry = engine_registry(db)
    registry.register("fat", fat)
    run_engine(db, registry)
    # A small kernel send buffer: the stalled clients' sockets fill long before the
    # workflow ends, whatever the system's TCP autotuning would allow.
    gateway = await start_gateway(db.events, max_queue=32, stall_timeout=0.2, send_buffer=32 * 1024)
    wf = pipeline("gated", *["fat"] * STAGES)
    db.orchestrator().start(wf)
    async with (
        open_client(gateway.url) as fast,
        open_client(gateway.url, sock=stalled_socket(gateway.url), max_queue=1) as slow,
        open_client(gateway.url, sock=stalled_socket(gateway.url), max_queue=1) as slow_all,
    ):
        await fast.subscribe("fast", workflow_id=wf.id)
        await slow.subscribe("slow", workflow_id=wf.id)
        await slow_all.subscribe("everything", all=True)
        # All three are live (at the end of the log) before the bulk of the events.
        head = await fast.events_until(started("s0"))
        head_slow = await slow.events_until(started("s0"))
        head_all = await slow_all.events_until(started("s0"))
        db.gate.set()  # from here on the slow ones read nothing
        rest = await fast.until_terminal()
        assert sequences(head + rest) == logged(db, wf.id)
        # Events wait for the stalled clients, whose queues are full: once they have taken
        # nothing for the stall timeout, their subscriptions overflow.
        await until(lambda: gateway.feed.subscriptions == 1, "the slow subscriptions to stop")

        # The stalled clients read at last: some events, then where to resume.
        got, resync = await drain_to_resync(slow)
        assert resync["id"] == "slow"
        assert resync["workflow_id"] == wf.id
        assert "queue full (holds 32 events) and no frame taken for" in resync["reason"]
        received = head_slow + got
        assert sequences(received) == list(range(1, len(received) + 1))  # no gap so far
        assert resync["since"] == received[-1]["sequence"]
        await slow.subscribe("slow", workflow_id=wf.id, since=resync["since"])
        received += await slow.until_terminal()
        assert sequences(received) == logged(db, wf.id)

        got_all, resync_all = await drain_to_resync(slow_all)
        assert (resync_all["id"], resync_all["all"]) == ("everything", True)
        received_all = head_all + got_all
        assert resync_all["cursors"] == {wf.id: received_all[-1]["sequence"]}
        # Resubscribing from since_time finds the workflow again: its next event is later.
        following = db.events.get_events(wf.id, received_all[-1]["sequence"], 1)[0]
        assert resync_all["since_time"] <= following.timestamp
        await slow_all.subscribe(
            "everything",
            all=True,
            cursors=resync_all["cursors"],
            since_time=resync_all["since_time"],
        )
        received_all += await slow_all.until_terminal(wf.id)
        assert sequences(received_all) == logged(db, wf.id)

        # The server kept serving everyone.
        await fast.send(type="ping")
        assert (await fast.expect("pong"))["type"] == "pong"
