"""The gateway streams the log: workflow, application and all subscriptions, resume, fan-out."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make gateway_fixtures importable

from gateway_helpers import (
    Client,
    GatewayFactory,
    logged,
    open_client,
    pipeline,
    sequences,
)

from stabilize.streaming.gateway import Gateway

if TYPE_CHECKING:
    from conftest import StreamEngine

pytest_plugins = ["gateway_fixtures"]


def started(ref_id: str) -> Any:
    """A ``done`` predicate: the last event is the start of stage ``ref_id``."""

    def done(events: list[dict[str, Any]]) -> bool:
        return bool(events) and (
            events[-1]["event_type"] == "stage.started"
            and events[-1]["data"].get("ref_id") == ref_id
        )

    return done


async def test_subscribe_streams_a_running_workflow_in_order(
    engine: StreamEngine, gateway: Gateway
) -> None:
    wf = pipeline("chatty", "gated", "step")
    engine.orchestrator().start(wf)
    async with open_client(gateway.url) as client:
        ack = await client.subscribe("run", workflow_id=wf.id)
        assert ack == {"type": "subscribed", "id": "run", "workflow_id": wf.id, "since": 0}
        before = await client.events_until(started("s1"))  # the gate holds s1: still running
        engine.gate.set()
        after = await client.until_terminal()
    frames = before + after
    assert sequences(frames) == logged(engine, wf.id) == list(range(1, len(frames) + 1))
    assert {f["id"] for f in frames} == {"run"}
    assert frames[0]["event_type"] == "workflow.created"
    assert frames[-1]["event_type"] == "workflow.completed"
    progress = [f["data"]["message"] for f in frames if f["event_type"] == "custom.progress"]
    assert progress == ["s0 step 1/3", "s0 step 2/3", "s0 step 3/3", "waiting for the gate"]
    first = frames[0]
    assert set(first) == {
        "type",
        "id",
        "workflow_id",
        "sequence",
        "event_type",
        "entity_type",
        "entity_id",
        "timestamp",
        "data",
    }
    assert (first["entity_type"], first["entity_id"]) == ("workflow", wf.id)


async def test_resume_with_since_delivers_the_rest_exactly_once(
    engine: StreamEngine, gateway: Gateway
) -> None:
    wf = pipeline("step", "gated", "chatty")
    engine.orchestrator().start(wf)
    async with open_client(gateway.url) as client:
        await client.subscribe(workflow_id=wf.id)
        first = await client.events_until(started("s1"))
    # Disconnected: the rest of the workflow commits meanwhile.
    engine.gate.set()
    engine.wait_until(lambda: engine.status(wf.id) == "SUCCEEDED", "the workflow to finish")
    last = first[-1]["sequence"]
    async with open_client(gateway.url) as client:
        ack = await client.subscribe(workflow_id=wf.id, since=last)
        assert ack["since"] == last
        rest = await client.until_terminal()
    assert rest[0]["sequence"] == last + 1
    assert sequences(first + rest) == logged(engine, wf.id)


async def test_many_clients_on_one_workflow_get_the_same_stream(
    engine: StreamEngine, gateway: Gateway
) -> None:
    wf = pipeline("gated", "chatty")
    engine.orchestrator().start(wf)

    async def follow(index: int) -> list[dict[str, Any]]:
        async with open_client(gateway.url) as client:
            await client.subscribe(f"c{index}", workflow_id=wf.id)
            head = await client.events_until(started("s0"))
            ready.release()
            return head + await client.until_terminal()

    ready = asyncio.Semaphore(0)
    tasks = [asyncio.create_task(follow(i)) for i in range(8)]
    for _ in tasks:
        await asyncio.wait_for(ready.acquire(), 30)
    engine.gate.set()
    streams = await asyncio.gather(*tasks)
    expected = logged(engine, wf.id)
    for stream in streams:
        assert sequences(stream) == expected


async def test_application_and_all_subscriptions_get_only_their_workflows(
    engine: StreamEngine, gateway: Gateway
) -> None:
    async with (
        open_client(gateway.url) as app_a,
        open_client(gateway.url) as everything,
    ):
        await app_a.subscribe("a", application="app-a")
        ack = await everything.subscribe("all", all=True)
        assert ack["all"] is True
        assert isinstance(ack["since_time"], int)
        other = pipeline("chatty", application="app-b")
        engine.orchestrator().start(other)
        seen_all = await everything.until_terminal(other.id)
        mine = [pipeline("step", application="app-a"), pipeline("chatty", application="app-a")]
        for wf in mine:
            engine.orchestrator().start(wf)
        by_a = split(await collect_until_done(app_a, {wf.id for wf in mine}))
        seen_all += await collect_until_done(everything, {wf.id for wf in mine})
        # Nothing else is on its way: a ping's pong is the next frame of each.
        for client in (app_a, everything):
            await client.send(type="ping")
            assert (await client.recv())["type"] == "pong"
    assert set(by_a) == {wf.id for wf in mine}
    assert set(split(seen_all)) == {other.id} | {wf.id for wf in mine}
    for wf_id, frames in {**by_a, **split(seen_all)}.items():
        assert sequences(frames) == logged(engine, wf_id), wf_id


def split(frames: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for frame in frames:
        out.setdefault(frame["workflow_id"], []).append(frame)
    return out


async def collect_until_done(client: Client, workflow_ids: set[str]) -> list[dict[str, Any]]:
    """Event frames per workflow until every one of ``workflow_ids`` ended."""
    ended: set[str] = set()

    def done(events: list[dict[str, Any]]) -> bool:
        if events and events[-1]["event_type"] in {"workflow.completed", "workflow.failed"}:
            ended.add(events[-1]["workflow_id"])
        return ended >= workflow_ids

    return await client.events_until(done)


async def test_all_subscription_resumes_with_cursors_and_since_time(
    engine: StreamEngine, gateway: Gateway
) -> None:
    first = pipeline("step", "gated", "step")
    async with open_client(gateway.url) as client:
        ack = await client.subscribe("all", all=True)
        engine.orchestrator().start(first)
        seen = await client.events_until(started("s1"))
    since_time = ack["since_time"]
    engine.gate.set()
    second = pipeline("chatty")
    engine.orchestrator().start(second)
    engine.wait_until(
        lambda: {engine.status(first.id), engine.status(second.id)} == {"SUCCEEDED"},
        "both workflows to end",
    )
    cursors = {first.id: seen[-1]["sequence"]}
    async with open_client(gateway.url) as client:
        await client.subscribe("all", all=True, cursors=cursors, since_time=since_time)
        rest = split(await collect_until_done(client, {first.id, second.id}))
    assert rest[first.id][0]["sequence"] == cursors[first.id] + 1
    assert sequences(seen + rest[first.id]) == logged(engine, first.id)
    assert sequences(rest[second.id]) == logged(engine, second.id)


async def test_unsubscribe_stops_events(engine: StreamEngine, gateway: Gateway) -> None:
    wf = pipeline("gated", "step")
    engine.orchestrator().start(wf)
    async with open_client(gateway.url) as client:
        await client.subscribe("x", workflow_id=wf.id)
        await client.events_until(started("s0"))
        await client.send(type="unsubscribe", id="x")
        frame = await client.recv()
        while frame["type"] == "event":  # sent before the server read the unsubscribe
            frame = await client.recv()
        assert frame == {"type": "unsubscribed", "id": "x"}
        engine.gate.set()
        engine.wait_until(lambda: engine.status(wf.id) == "SUCCEEDED", "the workflow to end")
        await client.send(type="ping", data={"n": 1})
        pong = await client.recv()
    assert pong["type"] == "pong"
    assert pong["data"] == {"n": 1}


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # backend-independent
async def test_heartbeats_and_ping(db: StreamEngine, start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(db.events, heartbeat=0.05)
    async with open_client(gateway.url) as client:
        beats = [await client.recv(skip_heartbeats=False) for _ in range(2)]
        assert [b["type"] for b in beats] == ["heartbeat", "heartbeat"]
        assert beats[0]["time"] <= beats[1]["time"]
        await client.send(type="ping", data="hello")
        pong = await client.expect("pong")
    assert pong["data"] == "hello"
    assert isinstance(pong["time"], int)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_gateway_in_a_thread(engine: StreamEngine) -> None:
    gateway = Gateway(engine.events, "127.0.0.1", 0)
    port = await asyncio.to_thread(gateway.run_in_thread)
    try:
        assert gateway.url == f"ws://127.0.0.1:{port}/ws"
        wf = pipeline("step")
        engine.orchestrator().start(wf)
        async with open_client(gateway.url) as client:
            await client.subscribe(workflow_id=wf.id)
            frames = await client.until_terminal()
        assert sequences(frames) == logged(engine, wf.id)
    finally:
        await asyncio.to_thread(gateway.stop_thread)
    with pytest.raises(ConnectionRefusedError):  # stopped: the port is closed
        async with open_client(gateway.url):
            pass
