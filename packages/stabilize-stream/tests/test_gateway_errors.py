"""Bad frames get an error frame with a stable code; nothing crashes, nobody else notices."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import ConnectionClosedError

from stabilize.events import SqliteEventStore

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make gateway_helpers importable

from gateway_helpers import (
    Client,
    GatewayFactory,
    logged,
    open_client,
    pipeline,
    sequences,
    stalled_socket,
    until,
)

if TYPE_CHECKING:
    from conftest import StreamEngine

pytest_plugins = ["gateway_fixtures"]

# The protocol does not depend on the backend: SQLite only.
pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)

LIMIT = 4096


async def test_every_error_code_and_the_connection_survives(
    engine: StreamEngine, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(engine.events, max_message_bytes=LIMIT, max_subscriptions=2)
    wf = pipeline("gated", "step")
    engine.orchestrator().start(wf)
    async with open_client(gateway.url) as bystander, open_client(gateway.url) as client:
        await bystander.subscribe("watch", workflow_id=wf.id)

        async def error(raw: str | bytes) -> dict[str, Any]:
            await client.ws.send(raw)
            return await client.expect("error")

        cases: list[tuple[str | bytes, str, str]] = [
            ("{oops", "bad_frame", "frame is not valid JSON"),
            ("[1]", "bad_frame", "frame must be a JSON object, not an array"),
            (b"\x00\x01", "bad_frame", "binary frames are not supported"),
            ('{"type": "hello"}', "unknown_type", 'unknown frame type "hello"'),
            ('{"type": "subscribe", "workflow_id": "w"}', "bad_frame", "needs an 'id'"),
            ('{"type": "unsubscribe", "id": "nope"}', "unknown_subscription", "'nope'"),
            ("x" * (LIMIT + 1), "too_large", f"exceeds the limit of {LIMIT} bytes"),
        ]
        for raw, code, message in cases:
            frame = await error(raw)
            assert frame["code"] == code, (raw, frame)
            assert message in frame["message"], (raw, frame)

        await client.send(type="subscribe", id="u", workflow_id="no-such-workflow")
        unknown = await client.expect("error")
        assert unknown["code"] == "unknown_workflow"
        assert unknown["id"] == "u"
        assert unknown["field"] == "workflow_id"
        assert "'no-such-workflow' has no events in the log" in unknown["message"]

        await client.send(type="subscribe", id="far", workflow_id=wf.id, since=10_000)
        past = await client.expect("error")
        assert (past["code"], past["field"]) == ("bad_frame", "since")
        assert "past the last event" in past["message"]

        await client.subscribe("one", workflow_id=wf.id)
        await client.send(type="subscribe", id="one", all=True)
        frame = await client.control()
        assert (frame["code"], frame["id"]) == ("subscription_exists", "one")
        await client.subscribe("two", all=True)
        await client.send(type="subscribe", id="three", application="x")
        frame = await client.control()
        assert frame["code"] == "too_many_subscriptions"
        assert "2 subscriptions" in frame["message"]

        # The bystander saw none of this, and its workflow still streams to the end.
        engine.gate.set()
        watched = await bystander.until_terminal()
    assert sequences(watched) == logged(engine, wf.id)


async def test_a_frame_far_over_the_limit_closes_with_1009(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(db.events, max_message_bytes=LIMIT)
    async with open_client(gateway.url) as client:
        await client.send(type="ping", data="x" * (LIMIT * 4))
        with pytest.raises(ConnectionClosedError) as closed:
            await client.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert "exceeds limit" in closed.value.rcvd.reason
    async with open_client(gateway.url) as other:  # the server is fine
        await other.send(type="ping")
        assert (await other.expect("pong"))["data"] is None


async def test_unreadable_log_gives_unavailable_and_503(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(db.events)
    wf = pipeline("step")
    db.orchestrator().start(wf)
    import asyncio
    import urllib.error
    import urllib.request

    def health() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{gateway.http_url}/healthz", timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, body = await asyncio.to_thread(health)
    assert (status, body["status"], body["database"]) == (200, "ok", "ok")
    db.events.close()  # the gateway's own connection to the log is gone
    status, body = await asyncio.to_thread(health)
    assert (status, body["status"]) == (503, "unavailable")
    assert body["database"].startswith("error: ProgrammingError")
    async with open_client(gateway.url) as client:
        await client.send(type="subscribe", id="s", workflow_id=wf.id)
        frame = await client.expect("error")
    assert frame["code"] == "unavailable"
    assert "try again later" in frame["message"]


async def read_all(client: Client) -> None:
    while True:
        await client.recv()


async def test_a_client_that_sends_but_never_reads_is_closed_with_1008(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(db.events, max_queue=8, send_buffer=4096, stall_timeout=0.5)
    async with open_client(gateway.url, sock=stalled_socket(gateway.url), max_queue=1) as ws:
        for _ in range(3000):  # each answered by a pong nobody reads
            await ws.send(type="ping", data="x" * 100)
        # The gateway stops reading while the answers wait; a client that then takes
        # nothing for the stall timeout is given up on (one that reads late is not).
        await until(lambda: all(c.closed for c in gateway._clients), "the gateway to give up on it")
        with pytest.raises(ConnectionClosedError) as closed:
            await read_all(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "client does not read its messages"


async def test_application_subscriptions_need_the_workflows_table(
    db: StreamEngine, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # A log in a SQLite file of its own cannot tell which application a workflow has.
    own_file = SqliteEventStore(f"sqlite:///{tmp_path / 'events-only.db'}")
    try:
        gateway = await start_gateway(own_file)
        async with open_client(gateway.url) as client:
            await client.send(type="subscribe", id="app", application="billing")
            refused = await client.expect("error")
            await client.subscribe("all", all=True)  # needs no application filter
    finally:
        own_file.close()
    assert (refused["code"], refused["id"], refused["field"]) == (
        "unavailable",
        "app",
        "application",
    )
    assert "application subscriptions are not available" in refused["message"]
