"""What one client sends cannot stop the others: numbers, bursts, connections, big events."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import InvalidStatus

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make gateway_helpers importable

from gateway_helpers import (
    HANG_GUARD,
    GatewayFactory,
    logged,
    open_client,
    pipeline,
    sequences,
    until,
)

from stabilize.streaming.gateway._protocol import MAX_EVENT_BYTES, MAX_SEQUENCE, MAX_TIME_MS

if TYPE_CHECKING:
    from conftest import StreamEngine

    from stabilize.streaming.gateway import Gateway

pytest_plugins = ["gateway_fixtures"]

BAD_NUMBERS: list[tuple[dict[str, Any], str, str]] = [
    ({"workflow_id": "WF", "since": 10**26}, "since", f"from 0 to {MAX_SEQUENCE}"),
    ({"workflow_id": "WF", "since": 2**63}, "since", f"from 0 to {MAX_SEQUENCE}"),
    ({"workflow_id": "WF", "since": -1}, "since", "not -1"),
    ({"workflow_id": "WF", "since": True}, "since", "not true"),
    ({"workflow_id": "WF", "since": 1.5}, "since", "not 1.5"),
    ({"all": True, "since_time": 2**80}, "since_time", f"from 0 to {MAX_TIME_MS}"),
    ({"all": True, "since_time": MAX_TIME_MS + 1}, "since_time", f"from 0 to {MAX_TIME_MS}"),
    ({"all": True, "since_time": 1.7e12}, "since_time", "not 1700000000000.0"),
    ({"all": True, "since_time": False}, "since_time", "not false"),
    ({"all": True, "cursors": {"w": 10**26}}, "cursors.w", f"from 0 to {MAX_SEQUENCE}"),
    ({"workflow_id": "a\x00b"}, "workflow_id", "no NUL"),
    ({"application": "\ud800"}, "application", "UTF-8 text"),
]


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
async def test_out_of_range_numbers_are_refused_and_nobody_else_notices(
    engine: StreamEngine, start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(engine.events)
    wf = pipeline("gated", "step")
    engine.orchestrator().start(wf)
    with caplog.at_level(logging.WARNING, logger="stabilize.streaming"):
        async with (
            open_client(gateway.url) as everything,
            open_client(gateway.url) as one,
            open_client(gateway.url) as client,
        ):
            await everything.subscribe("watch", all=True, since_time=0)
            await one.subscribe("one", workflow_id=wf.id)
            for target, field, message in BAD_NUMBERS:
                if target.get("workflow_id") == "WF":
                    target = {**target, "workflow_id": wf.id}
                await client.send(type="subscribe", id="bad", **target)
                frame = await client.expect("error")
                assert (frame["code"], frame["field"], frame["id"]) == ("bad_frame", field, "bad")
                assert message in frame["message"], frame
            # The shared reader kept reading: the other subscribers get every event.
            engine.gate.set()
            for bystander in (everything, one):
                frames = await bystander.until_terminal(wf.id)
                assert sequences(frames) == logged(engine, wf.id)
            await client.send(type="ping")
            await client.expect("pong")
    assert gateway.feed.last_error is None
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_a_burst_of_subscribes_is_answered_in_full(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(db.events)
    wf = pipeline("step")
    db.orchestrator().start(wf)
    async with open_client(gateway.url) as client:
        for i in range(2000):
            await client.send(type="subscribe", id=f"s{i}", workflow_id=wf.id)
        await client.send(type="ping", data="after the burst")
        answers = []
        while (frame := await client.control())["type"] != "pong":
            answers.append(frame)
        assert frame["data"] == "after the burst"
    acks = [f["id"] for f in answers if f["type"] == "subscribed"]
    refused = [f for f in answers if f["type"] == "error"]
    assert acks == [f"s{i}" for i in range(gateway.max_subscriptions)]
    assert [f["id"] for f in refused] == [f"s{i}" for i in range(100, 2000)]
    assert {f["code"] for f in refused} == {"too_many_subscriptions"}
    assert "already has 100 subscriptions" in refused[0]["message"]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_connections_past_the_limit_get_503(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(db.events, max_connections=2)
    async with open_client(gateway.url) as first, open_client(gateway.url) as second:
        with pytest.raises(InvalidStatus) as caught:
            async with open_client(gateway.url):
                pass
        response = caught.value.response
        body = json.loads(response.body or b"{}")
        assert response.status_code == 503
        assert body["code"] == "too_many_connections"
        assert "already serves 2 connections" in body["message"]
        assert "--max-connections" in body["message"]
        for client in (first, second):  # the connections served are not affected
            await client.send(type="ping")
            await client.expect("pong")
        await first.ws.close()
        await until(lambda: gateway.client_count == 1, "the first client to be gone")
        async with open_client(gateway.url) as third:  # a slot is free again
            await third.send(type="ping")
            await third.expect("pong")
        await second.send(type="ping")
        await second.expect("pong")


def fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=HANG_GUARD) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
async def test_a_default_client_keeps_streaming_past_a_2_mib_event(
    engine: StreamEngine, gateway: Gateway
) -> None:
    wf = pipeline("step", "step")
    blob = "x" * (2 * 1024 * 1024)
    wf.stages[0].context["blob"] = blob
    engine.orchestrator().start(wf)
    async with open_client(gateway.url) as client:  # websockets' default max_size: 1 MiB
        assert client.ws.protocol.max_message_size == 1024 * 1024
        await client.subscribe(workflow_id=wf.id)
        frames = await client.until_terminal()
        await client.send(type="ping")
        await client.expect("pong")
    assert sequences(frames) == logged(engine, wf.id)
    cut = [f for f in frames if "truncated" in f]
    assert cut, "no frame was truncated"
    for frame in cut:
        assert len(json.dumps(frame)) <= MAX_EVENT_BYTES
        marker = frame["truncated"]
        assert marker["bytes"] > MAX_EVENT_BYTES
        assert marker["url"] == f"/workflows/{wf.id}/events/{frame['sequence']}"
        for key in marker["fields"] or ():
            assert frame["data"][key] is None
        whole = await asyncio.to_thread(fetch, gateway.http_url + marker["url"])
        (event,) = [e for e in engine.events.get_events(wf.id) if e.sequence == frame["sequence"]]
        assert whole["data"] == event.data
        assert whole["sequence"] == frame["sequence"]
        assert blob in json.dumps(whole["data"])
    assert frames[0]["event_type"] == "workflow.created"
    assert "truncated" in frames[0]
