"""One connected client: its subscriptions and its bounded outgoing queue.

Slow consumers. Each client has one outgoing queue holding at most ``max_queue`` event
frames (control frames — acks, errors, pongs, heartbeats, resyncs — are not counted, and
at most one heartbeat waits at a time). A writer task sends the queue in order as fast
as the socket takes it. The feed never queues more than fits: events that do not fit stay
in the log and are queued when the queue has drained to half. A client is **stalled**
when frames wait in its queue and it has taken none for ``stall_timeout`` seconds. When
events wait for a subscription whose client's queue is full and the client is stalled,
the subscription **overflows**: its event frames still in the queue are dropped, it is
stopped, and a ``resync`` frame (queued after everything already sent) tells the client
the last sequence actually sent, per workflow, so that it can subscribe again from there.
Other subscriptions of the client, and other clients, are not affected; a gateway that is
itself busy (many clients, a burst of events) slows its clients down but drops nobody
who keeps reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from stabilize.streaming.gateway._feed import LogFeed, Prepared, now_ms
from stabilize.streaming.gateway._protocol import (
    Subscribe,
    event_frame,
    heartbeat_frame,
    resync_frame,
    unsubscribed_frame,
)

log = logging.getLogger(__name__)

CLOSE_NOT_READING = 1008
"""Close code when a client lets control frames pile up (it sends but never reads)."""

WRITE_BATCH = 256
"""Most frames the writer hands to the socket at once."""

WRITE_BYTES = 256 * 1024
"""Most bytes (roughly) the writer hands to the socket at once."""


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame (RFC 6455 section 5.2) of UTF-8 ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


class Subscription:
    """One subscription of a client, as fed by the :class:`LogFeed`.

    Args:
        client: The client it belongs to.
        frame: The client's ``subscribe`` frame.
        discover_from: Application/all: epoch ms from which workflows are included.
    """

    def __init__(self, client: ClientSession, frame: Subscribe, discover_from: int = 0) -> None:
        self.client = client
        self.frame = frame
        self.id = frame.id
        self.id_json = json.dumps(frame.id).encode()
        self._discover_from = discover_from
        self._active = True
        self.sent: dict[str, int] = {}
        """Per workflow, the last sequence handed to the socket (or the starting cursor)."""

    @property
    def kind(self) -> Literal["workflow", "application", "all"]:
        """Which events it wants."""
        return self.frame.kind

    @property
    def workflow_id(self) -> str | None:
        """Workflow subscriptions: the workflow."""
        return self.frame.workflow_id

    @property
    def application(self) -> str | None:
        """Application subscriptions: the application."""
        return self.frame.application

    @property
    def active(self) -> bool:
        """False once stopped."""
        return self._active

    @property
    def discover_from(self) -> int:
        """Application/all: epoch ms from which workflows are included."""
        return self._discover_from

    def start_cursor(self, workflow_id: str) -> int:
        """Where following ``workflow_id`` starts."""
        if self.frame.kind == "workflow":
            cursor = self.frame.since
        else:
            cursor = self.frame.cursors.get(workflow_id, 0)
        self.sent.setdefault(workflow_id, cursor)
        return cursor

    def room(self) -> int:
        """How many more event frames the client's queue takes."""
        return self.client.room()

    def wants_more(self) -> bool:
        """True when the client's queue has drained to half (or more) of its capacity."""
        return self.client.room() >= max(1, self.client.max_queue // 2)

    def stalled_in(self) -> float:
        """Seconds until the client counts as stalled (0: it is; inf: it is not busy)."""
        return self.client.stalled_in()

    def push(self, workflow_id: str, events: Sequence[Prepared]) -> None:
        """Queue events (at most :meth:`room`) for the client."""
        self.client.push_events(self, workflow_id, events)

    def overflow(self, since_time: int) -> None:
        """Stop the subscription, drop its queued events, queue a ``resync``."""
        self.client.overflow(self, since_time)

    def stop(self) -> None:
        """Mark it stopped (the feed skips it from now on)."""
        self._active = False


@dataclass(eq=False, slots=True)
class _Out:
    """A frame waiting to be sent (UTF-8 JSON); event frames carry where they came from."""

    data: bytes
    kind: Literal["event", "control", "heartbeat"] = "control"
    sub: Subscription | None = None
    workflow_id: str = ""
    sequence: int = 0
    timestamp: int = 0


class ClientSession:
    """The subscriptions and outgoing queue of one WebSocket connection.

    Args:
        ws: The connection.
        feed: The gateway's log reader.
        max_queue: Most event frames waiting to be sent.
        max_subscriptions: Most subscriptions at once.
        stall_timeout: Seconds without taking a frame after which a client with a full
            queue is stalled.
    """

    def __init__(
        self,
        ws: ServerConnection,
        feed: LogFeed,
        *,
        max_queue: int,
        max_subscriptions: int,
        stall_timeout: float = 1.0,
    ) -> None:
        self.ws = ws
        self.feed = feed
        self.max_queue = max_queue
        self.max_subscriptions = max_subscriptions
        self.stall_timeout = stall_timeout
        self._progress_at = time.monotonic()  # the writer last took a frame, or got work
        self.subscriptions: dict[str, Subscription] = {}
        self._out: deque[_Out] = deque()
        self._events = 0  # event frames in _out
        self._controls = 0  # control frames in _out
        self._heartbeat_queued = False
        self._ready = asyncio.Event()
        self._took = asyncio.Event()  # set whenever the writer takes a batch
        self._max_controls = max(64, max_queue)
        self.closed = False
        self._closing: asyncio.Task[None] | None = None
        self.events_sent = 0
        """Event frames handed to the socket so far."""

    # -- queue -------------------------------------------------------------------------

    def room(self) -> int:
        """How many more event frames fit in the queue."""
        return self.max_queue - self._events

    @property
    def pending(self) -> int:
        """Frames waiting to be sent."""
        return len(self._out)

    def stalled_in(self) -> float:
        """Seconds until the client is stalled: frames wait, none taken for ``stall_timeout``.

        0 when it is stalled; infinity when nothing waits to be sent.
        """
        if not self._out:
            return math.inf
        return max(0.0, self._progress_at + self.stall_timeout - time.monotonic())

    def _append(self, out: _Out) -> None:
        if not self._out:
            self._progress_at = time.monotonic()  # an idle writer gets work: not stalled
        self._out.append(out)
        self._ready.set()

    def send_control(self, text: str) -> None:
        """Queue a control frame (ack, error, pong, resync)."""
        if self.closed:
            return
        if self._controls >= self._max_controls:
            # The client keeps sending but never reads: nothing bounds what it would cost.
            self._close_not_reading()
            return
        self._controls += 1
        self._append(_Out(text.encode()))

    async def read_room(self) -> None:
        """Wait, before the next client frame is read, until its answer has room.

        Each client frame is answered by at most one control frame. While half of the
        control frames allowed wait to be sent, the reader waits for the writer (a burst
        of frames is answered as fast as the client reads, and the client's further
        frames wait in the socket). A client that takes no frame for ``stall_timeout``
        meanwhile does not read its messages, and is closed (1008).
        """
        while not self.closed and self._controls >= self._max_controls // 2:
            self._took.clear()
            try:
                async with asyncio.timeout(self.stall_timeout):
                    await self._took.wait()
            except TimeoutError:
                if self.stalled_in() == 0:
                    self._close_not_reading()

    def _close_not_reading(self) -> None:
        self.closed = True
        self._closing = asyncio.get_running_loop().create_task(
            self.ws.close(CLOSE_NOT_READING, "client does not read its messages")
        )

    def send_heartbeat(self) -> None:
        """Queue a heartbeat unless one is still waiting to be sent."""
        if not self._heartbeat_queued and not self.closed:
            self._heartbeat_queued = True
            self._append(_Out(heartbeat_frame(now_ms()).encode(), "heartbeat"))

    def push_events(self, sub: Subscription, workflow_id: str, events: Sequence[Prepared]) -> None:
        """Queue event frames (the feed hands at most :meth:`room` of them)."""
        if not sub.active or self.closed or not events:
            return
        assert len(events) <= self.room(), "the feed handed more events than fit"
        if not self._out:
            self._progress_at = time.monotonic()
        out = self._out
        for item in events:
            out.append(
                _Out(
                    event_frame(sub.id_json, item.body),
                    "event",
                    sub,
                    workflow_id,
                    item.event.sequence,
                    item.event.timestamp,
                )
            )
        self._events += len(events)
        self._ready.set()

    def _drop(self, sub: Subscription) -> list[_Out]:
        """Stop ``sub`` and remove its waiting event frames; returns them."""
        sub.stop()
        self.feed.remove(sub)
        self.subscriptions.pop(sub.id, None)
        dropped = [o for o in self._out if o.sub is sub]
        if dropped:
            self._out = deque(o for o in self._out if o.sub is not sub)
            self._events -= len(dropped)
        return dropped

    def overflow(self, sub: Subscription, since_time: int) -> None:
        """Stop ``sub``, drop its queued events and queue a ``resync`` frame.

        Args:
            sub: The subscription.
            since_time: Application/all: a time at or before every event not sent.
        """
        if not sub.active:
            return
        dropped = self._drop(sub)
        stalled = time.monotonic() - self._progress_at
        reason = (
            f"queue full (holds {self.max_queue} events) and no frame taken for "
            f"{stalled:.1f} s: {len(dropped)} queued events dropped"
        )
        log.info("subscription %s overflowed: %s", sub.id, reason)
        if sub.kind == "workflow":
            assert sub.workflow_id is not None
            frame = resync_frame(
                sub.frame, reason=reason, since=sub.sent.get(sub.workflow_id, sub.frame.since)
            )
        else:
            frame = resync_frame(
                sub.frame,
                reason=reason,
                cursors=dict(sub.sent),
                since_time=min([since_time, *(o.timestamp for o in dropped)]),
            )
        self.send_control(frame)

    # -- subscriptions -----------------------------------------------------------------

    def add(self, sub: Subscription) -> None:
        """Register a subscription (after its ack was queued) and start feeding it."""
        self.subscriptions[sub.id] = sub
        self.feed.add(sub)

    def unsubscribe(self, sub_id: str) -> bool:
        """Stop a subscription and drop its waiting events; False if there is none."""
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return False
        self._drop(sub)
        self.send_control(unsubscribed_frame(sub_id))
        return True

    def close(self) -> None:
        """Stop every subscription (the connection is gone)."""
        self.closed = True
        for sub in list(self.subscriptions.values()):
            sub.stop()
            self.feed.remove(sub)
        self.subscriptions.clear()
        self._out.clear()
        self._events = self._controls = 0
        self._ready.set()
        self._took.set()

    # -- writer ------------------------------------------------------------------------

    async def write(self) -> None:
        """Send queued frames in order until the connection closes.

        Frames are taken in batches (up to ``WRITE_BATCH`` frames or ``WRITE_BYTES``
        bytes): each batch is framed by the connection's protocol and written to the
        socket at once, then the writer waits for the socket to drain below its limit.
        One batch costs one write and one wait instead of one per frame.
        """
        half = self.max_queue // 2
        ws = self.ws
        # Without extensions (the gateway turns compression off), a server's text frame is
        # a header and the payload, as the protocol's send_text would serialize it: framed
        # here, the fan-out costs a third of the CPU per frame.
        plain = not ws.protocol.extensions
        with contextlib.suppress(ConnectionClosed):
            while not self.closed:
                if not self._out:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                self._progress_at = time.monotonic()
                batch = self._take(half)
                # send_context checks that the connection is open, then waits for the
                # socket to drain below the write limit.
                async with ws.send_context():
                    if plain:
                        pending = ws.protocol.data_to_send()  # e.g. a pong, first
                        ws.transport.write(b"".join([*pending, *map(text_frame, batch)]))
                    else:
                        for data in batch:
                            ws.protocol.send_text(data)
                        ws.transport.writelines(ws.protocol.data_to_send())

    def _take(self, half: int) -> list[bytes]:
        """Pop the next batch of frames and account for them as sent."""
        batch: list[bytes] = []
        size = 0
        out = self._out
        was_above = self._events > half
        while out and len(batch) < WRITE_BATCH and size < WRITE_BYTES:
            item = out.popleft()
            batch.append(item.data)
            size += len(item.data)
            if item.sub is not None:
                self._events -= 1
                self.events_sent += 1
                # Sent as far as resuming goes: the frame is handed to the socket now.
                item.sub.sent[item.workflow_id] = item.sequence
            elif item.kind == "heartbeat":
                self._heartbeat_queued = False
            else:
                self._controls -= 1
        if was_above and self._events <= half:
            self.feed.wake(scan=False)  # followers waiting for room
        self._took.set()
        return batch
