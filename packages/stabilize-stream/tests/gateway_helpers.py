"""Helpers of the gateway tests: a JSON client, workflows, an in-process engine.

Test modules make this directory importable (pytest's importlib mode does not) and import
from here; the fixtures are in ``gateway_fixtures`` (a plugin: ``pytest_plugins``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect

from stabilize import (
    QueueProcessor,
    QueueProcessorConfig,
    StageExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
)
from stabilize.events import emit_progress
from stabilize.streaming.gateway import Gateway

if TYPE_CHECKING:
    from conftest import StreamEngine

HANG_GUARD = 30.0
"""Seconds any wait may take before a test gives up (guards against hangs only)."""

TERMINAL = {"workflow.completed", "workflow.failed", "workflow.canceled"}


class Client:
    """A WebSocket client of the gateway that speaks its JSON frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, *, skip_heartbeats: bool = True) -> dict[str, Any]:
        """The next frame (heartbeats skipped unless asked for)."""
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), HANG_GUARD)
            assert isinstance(raw, str), f"binary frame from the server: {raw!r}"
            frame: dict[str, Any] = json.loads(raw)
            if not skip_heartbeats or frame["type"] != "heartbeat":
                return frame

    async def expect(self, frame_type: str) -> dict[str, Any]:
        """The next frame, which must be of ``frame_type``."""
        frame = await self.recv()
        assert frame["type"] == frame_type, frame
        return frame

    async def control(self) -> dict[str, Any]:
        """The next frame that is not an event (nor a heartbeat)."""
        while (frame := await self.recv())["type"] == "event":
            pass
        return frame

    async def subscribe(self, sub_id: str = "s", **target: Any) -> dict[str, Any]:
        """Subscribe and return the ack (events of other subscriptions may come first)."""
        await self.send(type="subscribe", id=sub_id, **target)
        while (ack := await self.recv())["type"] == "event":
            assert ack["id"] != sub_id, f"an event of {sub_id!r} came before its ack"
        assert ack["type"] == "subscribed", ack
        assert ack["id"] == sub_id
        return ack

    async def events_until(
        self, done: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        """Event frames until ``done(events so far)``; any other frame fails the test."""
        events: list[dict[str, Any]] = []
        while not done(events):
            frame = await self.recv()
            assert frame["type"] == "event", frame
            events.append(frame)
        return events

    async def until_terminal(self, workflow_id: str | None = None) -> list[dict[str, Any]]:
        """Event frames up to a terminal event (of ``workflow_id``, when given)."""

        def done(events: list[dict[str, Any]]) -> bool:
            return bool(events) and (
                events[-1]["event_type"] in TERMINAL
                and workflow_id in (None, events[-1]["workflow_id"])
            )

        return await self.events_until(done)


GatewayFactory = Callable[..., Awaitable[Gateway]]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Check ``condition`` every few milliseconds until it holds (the deadline guards hangs)."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def open_client(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    """A connected :class:`Client` (closed on exit).

    Unless told otherwise, the client buffers every frame it receives: a test that leaves
    frames unread would otherwise stop reading the socket and wait out the close timeout.
    """
    kwargs.setdefault("max_queue", None)
    async with connect(url, open_timeout=HANG_GUARD, **kwargs) as ws:
        yield Client(ws)


def chatty(count: int) -> Callable[[StageExecution], TaskResult]:
    """A task that emits ``count`` progress updates, then succeeds."""

    def task(stage: StageExecution) -> TaskResult:
        for i in range(count):
            emit_progress(stage, f"{stage.ref_id} step {i + 1}/{count}", step=i + 1)
        return TaskResult.success(outputs={"steps": count})

    return task


def engine_registry(db: StreamEngine) -> TaskRegistry:
    """``step`` succeeds; ``chatty`` reports 3 progress updates; ``gated`` waits for the gate."""
    registry = TaskRegistry()
    registry.register("step", lambda stage: TaskResult.success(outputs={"ok": True}))
    registry.register("chatty", chatty(3))

    def gated(stage: StageExecution) -> TaskResult:
        emit_progress(stage, "waiting for the gate")
        if not db.gate.wait(HANG_GUARD):
            raise RuntimeError("gate never opened")
        return TaskResult.success(outputs={"gated": True})

    registry.register("gated", gated)
    return registry


def run_engine(db: StreamEngine, registry: TaskRegistry | None = None) -> QueueProcessor:
    """Run a processor in this process until teardown (the ``db`` fixture stops it)."""
    processor = QueueProcessor(
        db.queue,
        store=db.store,
        task_registry=registry or engine_registry(db),
        config=QueueProcessorConfig(poll_frequency_ms=5),
    )
    db.processors.append(processor)
    processor.start()
    return processor


def pipeline(*task_types: str, application: str = "gateway-tests") -> Workflow:
    """One stage per task type, in a row (``s0`` -> ``s1`` -> ...)."""
    from conftest import StreamEngine

    return StreamEngine.chain(*task_types, application=application)


def sequences(frames: list[dict[str, Any]]) -> list[int]:
    return [f["sequence"] for f in frames]


def logged(db: StreamEngine, workflow_id: str) -> list[int]:
    """The sequences in the log of one workflow."""
    return [e.sequence for e in db.events.get_events(workflow_id)]


def stalled_socket(url: str) -> socket.socket:
    """A connected socket with a tiny receive buffer (stops the server's writes soon)."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(HANG_GUARD)
    sock.connect((parts.hostname, parts.port))
    return sock
