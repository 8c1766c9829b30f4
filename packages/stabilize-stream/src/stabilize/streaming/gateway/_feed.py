"""The gateway's one reader of the event log, fanning each batch out to every subscriber.

One :class:`LogFeed` per gateway runs one loop (an asyncio task). Each pass:

1. **Scans** for workflows that changed (when a scan is due: every ``poll_interval``, or at
   once when a commit wakes the feed, see :mod:`stabilize.streaming.gateway._wake`). With
   only workflow subscriptions, on at most ``DIRECT_READS`` workflows, those workflows are
   simply read (step 2). Otherwise
   ``event_store.recent_heads(since_ms, application)`` returns, per workflow with events
   recorded since ``since_ms``, its highest sequence. ``since_ms`` reaches back
   ``fast_slack_ms`` before the previous scan (an event's timestamp is taken before its
   transaction commits) and, every ``full_scan_interval``, ``clock_slack_ms`` before now
   (slow commits, clocks of other machines). Application and all subscriptions learn of
   workflows this way; each then gets a *follower* for it. A full scan also re-reads every
   workflow followed by a workflow subscription.
2. **Reads** each workflow whose head is past one of its followers' cursors:
   ``get_events(workflow_id, cursor, batch_size)`` once per batch for all followers at or
   after that cursor (100 clients on one workflow: one read per batch), and hands every
   follower the events after its own cursor, in order.

Flow control: a follower is handed only as many events as fit in its client's queue; the
rest stay in the log (nothing more is buffered) and follow when the queue has drained to
half. A follower *starves* when events are waiting for it and its client's queue is full;
if the client is also *stalled* (it has taken no frame for the gateway's stall timeout),
the subscription overflows: see :mod:`stabilize.streaming.gateway._client`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from stabilize.events import EventStore
from stabilize.models.event import Event
from stabilize.streaming._item import TERMINAL_EVENTS
from stabilize.streaming.gateway._protocol import MAX_EVENT_BYTES, event_body

log = logging.getLogger(__name__)

MAX_PARKED = 100_000
"""Cursors of finished workflows an application/all subscription remembers (LRU)."""

DIRECT_READS = 16
"""With only workflow subscriptions, on at most this many workflows, a pass reads those
workflows directly instead of scanning the log for changes (cheaper on a busy log)."""


@dataclass(frozen=True)
class Prepared:
    """An event read from the log, serialized once for every subscriber."""

    event: Event
    body: bytes

    @property
    def sequence(self) -> int:
        """The event's sequence number."""
        return self.event.sequence


class Subscriber(Protocol):
    """A subscription as the feed sees it (implemented by the client session)."""

    @property
    def kind(self) -> Literal["workflow", "application", "all"]:
        """Which events it wants."""
        ...

    @property
    def workflow_id(self) -> str | None:
        """Workflow subscriptions: the workflow."""
        ...

    @property
    def application(self) -> str | None:
        """Application subscriptions: the application."""
        ...

    @property
    def active(self) -> bool:
        """False once stopped (unsubscribed, overflowed, client gone)."""
        ...

    @property
    def discover_from(self) -> int:
        """Application/all: epoch ms from which workflows are included."""
        ...

    def start_cursor(self, workflow_id: str) -> int:
        """Where following ``workflow_id`` starts (the client's cursor, else 0)."""
        ...

    def room(self) -> int:
        """How many more events its client's queue takes."""
        ...

    def wants_more(self) -> bool:
        """True when the queue has drained enough to be refilled."""
        ...

    def stalled_in(self) -> float:
        """Seconds until the client counts as stalled (0: it is; inf: it is not busy)."""
        ...

    def push(self, workflow_id: str, events: Sequence[Prepared]) -> None:
        """Queue ``events`` (at most :meth:`room` of them) for the client."""
        ...

    def overflow(self, since_time: int) -> None:
        """Stop the subscription and tell the client where to resume.

        Args:
            since_time: Application/all: a time at or before every event not sent.
        """
        ...


@dataclass(eq=False)
class _Follower:
    """One subscription following one workflow."""

    sub: Subscriber
    workflow_id: str
    cursor: int
    head: int = 0
    """The highest sequence known to be in the log (the follower is owed events past
    ``cursor`` while ``cursor < head``)."""
    last_timestamp: int | None = None
    """Timestamp of the last event handed over (None: none yet)."""


@dataclass(eq=False)
class _Entry:
    """The feed's bookkeeping of one subscription."""

    sub: Subscriber
    followers: dict[str, _Follower] = field(default_factory=dict)
    parked: OrderedDict[str, int] = field(default_factory=OrderedDict)
    scanned: bool = False


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (the clock event timestamps use)."""
    return int(time.time() * 1000)


class LogFeed:
    """Reads the event log for every subscription of one gateway.

    Args:
        source: The event store.
        poll_interval: Seconds between scans when nothing wakes the feed.
        batch_size: Most events read per query.
        fast_slack_ms: How far each scan reaches back before the previous one.
        clock_slack_ms: How far a full scan reaches back before now.
        full_scan_interval: Seconds between full scans.
        max_event_bytes: Longest event frame (see :func:`event_body`).
    """

    def __init__(
        self,
        source: EventStore,
        *,
        poll_interval: float = 0.05,
        batch_size: int = 500,
        fast_slack_ms: int = 2_000,
        clock_slack_ms: int = 30_000,
        full_scan_interval: float = 5.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.source = source
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.fast_slack_ms = fast_slack_ms
        self.clock_slack_ms = clock_slack_ms
        self.full_scan_interval = full_scan_interval
        self.max_event_bytes = max_event_bytes
        self._entries: dict[Subscriber, _Entry] = {}
        self._followers: dict[str, set[_Follower]] = {}
        self._dirty: set[str] = set()
        self._hungry: set[_Follower] = set()
        self._wake = asyncio.Event()
        self._scan_due = True
        self._last_scan_ms = now_ms()
        self._last_full_scan = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.last_error: BaseException | None = None
        """The error of the last failed pass (None after a good one)."""
        self.reads = 0
        """Queries made (scans and reads): a measure of the feed's cost."""

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="log-feed")

    async def close(self) -> None:
        """Stop the loop (a read in progress finishes in its thread)."""
        task, self._task = self._task, None
        self._closing = True
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # Ours, or the caller's: re-raise only if the caller was cancelled.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    def wake(self, scan: bool = True) -> None:
        """Run a pass now: scan for changes (``scan``) or only serve drained queues."""
        if scan:
            self._scan_due = True
        self._wake.set()

    # -- subscriptions -----------------------------------------------------------------

    def add(self, sub: Subscriber) -> None:
        """Start feeding a subscription (its ack is already queued)."""
        if not self._entries:
            # Nothing was scanned while nobody subscribed; a new application/all
            # subscription looks back on its own (its since_time), a workflow one reads.
            self._last_scan_ms = now_ms()
        entry = _Entry(sub)
        self._entries[sub] = entry
        if sub.kind == "workflow":
            assert sub.workflow_id is not None
            self._follow(entry, sub.workflow_id)
            self.wake(scan=False)
        else:
            self.wake()

    def remove(self, sub: Subscriber) -> None:
        """Stop feeding a subscription (idempotent)."""
        entry = self._entries.pop(sub, None)
        if entry is None:
            return
        for follower in entry.followers.values():
            followers = self._followers.get(follower.workflow_id)
            if followers is not None:
                followers.discard(follower)
                if not followers:
                    del self._followers[follower.workflow_id]
            self._hungry.discard(follower)

    @property
    def subscriptions(self) -> int:
        """The number of subscriptions fed."""
        return len(self._entries)

    def _follow(self, entry: _Entry, workflow_id: str) -> _Follower:
        follower = entry.followers.get(workflow_id)
        if follower is None:
            cursor = entry.parked.pop(workflow_id, None)
            if cursor is None:
                cursor = entry.sub.start_cursor(workflow_id)
            follower = _Follower(entry.sub, workflow_id, cursor)
            entry.followers[workflow_id] = follower
            self._followers.setdefault(workflow_id, set()).add(follower)
            self._dirty.add(workflow_id)
        return follower

    def _park(self, follower: _Follower) -> None:
        """Forget a finished workflow's follower, keeping only its cursor."""
        entry = self._entries.get(follower.sub)
        if entry is None or entry.sub.kind == "workflow":
            return
        entry.followers.pop(follower.workflow_id, None)
        followers = self._followers.get(follower.workflow_id)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._followers[follower.workflow_id]
        entry.parked[follower.workflow_id] = follower.cursor
        if len(entry.parked) > MAX_PARKED:
            entry.parked.popitem(last=False)

    # -- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            timeout = self.poll_interval if self._entries else None
            soonest = min((f.sub.stalled_in() for f in self._hungry), default=math.inf)
            if soonest < math.inf:
                # Look again when the first starving client would count as stalled.
                timeout = max(0.005, soonest if timeout is None else min(timeout, soonest))
            if not self._wake.is_set():
                # asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow a
                # cancellation that arrives as the wait ends, and close() would hang.
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    self._scan_due = True
            self._wake.clear()
            try:
                await self._pass()
            except Exception as exc:
                # The database is restarting, a file is busy...: retried on the next pass.
                if self.last_error is None:
                    log.warning("reading the event log failed", exc_info=True)
                self.last_error = exc
                self._scan_due = True
                await asyncio.sleep(self.poll_interval)
            else:
                self.last_error = None

    async def _pass(self) -> None:
        if self._scan_due and self._entries:
            self._scan_due = False
            await self._scan()
        for follower in list(self._hungry):
            if not follower.sub.active:
                self._hungry.discard(follower)
            elif follower.sub.wants_more():
                self._hungry.discard(follower)
                self._dirty.add(follower.workflow_id)
            elif follower.cursor < follower.head:
                self._starved(follower)
            else:
                self._hungry.discard(follower)
        while self._dirty:
            workflow_id = self._dirty.pop()
            try:
                await self._read(workflow_id)
            except BaseException:
                self._dirty.add(workflow_id)  # read it again on the next pass
                raise

    async def _heads(self, since_ms: int, application: str | None) -> dict[str, int]:
        self.reads += 1
        return await asyncio.to_thread(self.source.recent_heads, since_ms, application)

    async def _scan(self) -> None:
        started = now_ms()
        full = time.monotonic() - self._last_full_scan >= self.full_scan_interval
        if all(e.sub.kind == "workflow" for e in self._entries.values()):
            followed = {e.sub.workflow_id for e in self._entries.values()}
            if len(followed) <= DIRECT_READS:
                self._dirty.update(w for w in followed if w is not None)
                self._last_scan_ms = started
                return
        since = started - self.clock_slack_ms if full else self._last_scan_ms - self.fast_slack_ms
        entries = list(self._entries.values())
        # A new application/all subscription first looks back to its own since_time.
        for entry in entries:
            if entry.sub.kind != "workflow" and not entry.scanned:
                entry.scanned = True
                heads = await self._heads(entry.sub.discover_from, entry.sub.application)
                self._mark(heads, [entry])
        keys: dict[str | None, list[_Entry]] = {}
        for entry in entries:
            if entry.sub.kind == "application":
                keys.setdefault(entry.sub.application, []).append(entry)
            else:
                # Workflow subscriptions only need their own workflows' heads (in None's).
                keys.setdefault(None, []).append(entry)
        for application, interested in keys.items():
            heads = await self._heads(since, application)
            self._mark(heads, [e for e in interested if e.sub.kind != "workflow"])
        self._last_scan_ms = started
        if full:
            self._last_full_scan = time.monotonic()
            for entry in entries:
                if entry.sub.kind == "workflow":
                    assert entry.sub.workflow_id is not None
                    self._dirty.add(entry.sub.workflow_id)

    def _mark(self, heads: dict[str, int], discoverers: list[_Entry]) -> None:
        """Follow new workflows for application/all subscriptions; mark those with news."""
        for workflow_id, head in heads.items():
            for entry in discoverers:
                if entry.sub.active and entry.sub in self._entries:
                    self._follow(entry, workflow_id)
            for follower in self._followers.get(workflow_id, ()):
                follower.head = max(follower.head, head)
                if follower.cursor < head:
                    self._dirty.add(workflow_id)

    async def _read(self, workflow_id: str) -> None:
        """Read ``workflow_id`` from its lowest cursor and hand each follower its part."""
        followers = [f for f in self._followers.get(workflow_id, ()) if f.sub.active]
        while followers:
            eligible = [f for f in followers if f.sub.room() > 0]
            full = [f for f in followers if f not in eligible]
            if not eligible:
                # Nobody can take anything: only learn whether events wait for them.
                await self._probe(workflow_id, full)
                return
            low = min(f.cursor for f in eligible)
            self.reads += 1
            events = await asyncio.to_thread(
                self.source.get_events, workflow_id, low, self.batch_size
            )
            batch = [Prepared(e, event_body(e, self.max_event_bytes)) for e in events]
            sequences = [e.sequence for e in events]
            at_end = len(events) < self.batch_size
            if sequences:
                for follower in followers:
                    follower.head = max(follower.head, sequences[-1])
            for follower in full:
                if follower.cursor < follower.head:
                    self._starved(follower)
            followers = []
            for follower in eligible:
                if not follower.sub.active:  # stopped while we read
                    continue
                new = batch[bisect_right(sequences, follower.cursor) :]
                if self._hand(follower, new, at_end) and not at_end:
                    followers.append(follower)
            if at_end:
                return

    async def _probe(self, workflow_id: str, followers: list[_Follower]) -> None:
        """Find out whether events wait for followers whose queues are full."""
        unknown = [f for f in followers if f.cursor >= f.head]
        if unknown:
            self.reads += 1
            since = min(f.cursor for f in unknown)
            found = await asyncio.to_thread(self.source.get_events, workflow_id, since, 1)
            if found:
                for follower in unknown:
                    follower.head = max(follower.head, found[0].sequence)
        for follower in followers:
            if follower.sub.active and follower.cursor < follower.head:
                self._starved(follower)

    def _hand(self, follower: _Follower, new: list[Prepared], at_end: bool) -> bool:
        """Give a follower what fits of its new events; True if it took them all."""
        take = min(len(new), follower.sub.room())
        if take:
            follower.sub.push(follower.workflow_id, new[:take])
            follower.cursor = new[take - 1].sequence
            follower.last_timestamp = new[take - 1].event.timestamp
        if take < len(new):
            self._starved(follower)
            return False
        if at_end and new and new[-1].event.event_type in TERMINAL_EVENTS:
            self._park(follower)
        return True

    def _starved(self, follower: _Follower) -> None:
        """Events wait for a follower whose queue is full: wait for room, or overflow."""
        if follower.sub.stalled_in() > 0:
            self._hungry.add(follower)
            return
        entry = self._entries.get(follower.sub)
        followers = list(entry.followers.values()) if entry is not None else [follower]
        # Every event not sent is at or after the last one each owed follower was handed
        # (timestamps grow along a workflow's log); a follower handed nothing yet was
        # found by a scan reaching back to the subscription's start.
        since_time = min(
            (
                f.last_timestamp if f.last_timestamp is not None else f.sub.discover_from
                for f in followers
                if f.cursor < f.head
            ),
            default=now_ms(),
        )
        follower.sub.overflow(since_time)
