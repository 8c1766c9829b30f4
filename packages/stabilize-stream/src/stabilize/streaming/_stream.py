"""WorkflowStream: the events of one workflow, live, resumable and across processes.

What a reader sees:

- Every event recorded in the workflow's log, once, in sequence order: with
  ``source="replay"`` if it was in the log when the stream started reading (history),
  ``source="live"`` if it was committed later. The stream tails the log itself
  (``sequence > last seen``, ordered, in batches: a range scan of the ``events`` primary
  key). Commits made in this process wake the stream at once through the event bus.
  Commits of workers in *other* processes wake it as soon as the event store notices
  them (:meth:`~stabilize.events.EventStore.watch`: at once on PostgreSQL, whose engine
  sends a ``NOTIFY`` with each commit that records events; within milliseconds on SQLite,
  from the file's ``data_version``), and arrive within ``poll_interval`` otherwise (a
  store that cannot be watched, or a lost notification). :meth:`WorkflowStream.close`
  reads the log once more first, so that consumers get everything committed before the
  call.
- Progress updates (``emit_progress``) from tasks running in *this* process as soon as
  they are emitted: ``event_type="custom.progress"``, ``sequence=0``, ``source="live"``.
  They are recorded with the task's result; the recorded copy of an update this stream
  already delivered live is skipped (matched by stage id and data), and so is a live
  copy whose recorded one went out first, so an in-process follower sees each update
  once. Updates from other processes arrive only as recorded copies, when the task's
  result commits.
- After a crash, the updates of the interrupted task execution were never recorded: a
  live reader saw them, a later reader of the log does not. Everything else in the log
  is exactly what committed.

Resuming: ``last_sequence`` is the highest sequence handed to a consumer. A new stream
opened with ``since=last_sequence`` yields every later event exactly once, in order, with
no gap, including the ones committed while no stream was open. (A recorded progress copy
skipped because its live copy was delivered may be delivered again by the resumed stream.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, Literal

from stabilize.events import (
    CommitWatcher,
    EventStore,
    can_follow,
    default_event_store,
    get_event_bus,
)
from stabilize.models.event import Event
from stabilize.streaming._item import StreamItem

log = logging.getLogger(__name__)

_Sink = Callable[[StreamItem | None], None]
"""A consumer of the pump: an item, or None when the stream closes."""

_PROGRESS = "custom.progress"
_LOGGED_FIRST_KEPT = 1024


class StreamError(RuntimeError):
    """A stream cannot be opened (no event store) or is used after close."""


def _progress_key(entity_id: str, data: dict[str, Any]) -> tuple[str, str]:
    return entity_id, json.dumps(data, sort_keys=True, default=str)


class WorkflowStream:
    """The events of one workflow: history, live updates, resumable by sequence.

    A stream has one cursor, shared by its consumers (:meth:`on_event` callbacks,
    :meth:`follow` and the async iterator); use one stream per consumer for independent
    positions. A background thread reads the log while anyone consumes.

    Args:
        workflow_id: The workflow to follow.
        event_store: Where its events are recorded. Default: the store configured with
            :func:`stabilize.events.configure_event_sourcing`, else the log in the
            database of an engine opened in this process that holds the workflow
            (recording into the engine's own database is on by default).
        since: Resume after this sequence number. ``None`` (default): the first consumer
            decides: from the beginning with ``include_history=True``, else from the
            current end of the log.
        poll_interval: Seconds between reads of the log when nothing woke the stream
            (bounds the delay for events committed by other processes; where the event
            store notices their commits, they wake the stream earlier).
        batch_size: Most events read per query.

    Raises:
        StreamError: No event store given and none found for the workflow.
    """

    def __init__(
        self,
        workflow_id: str,
        event_store: EventStore | None = None,
        *,
        since: int | None = None,
        poll_interval: float = 0.05,
        batch_size: int = 500,
    ) -> None:
        store = event_store if event_store is not None else default_event_store(workflow_id)
        if store is None:
            raise StreamError(
                f"no event log holds workflow {workflow_id!r} in this process: open its "
                "database first (a store or queue on it), or pass event_store= "
                "(stabilize.events.open_event_store(url) opens one from a URL)"
            )
        if since is not None and since < 0:
            raise ValueError("since must be >= 0")
        self.workflow_id = workflow_id
        self.event_store: EventStore = store
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self._cursor: int | None = since
        self._history_end = 0  # the log's end when the pump started: older is "replay"
        self._last_sequence = since or 0
        self._lock = threading.Lock()  # sinks, live buffer, thread state
        self._pump_lock = threading.Lock()  # one pass (read, deliver, advance) at a time
        self._wake = threading.Event()
        self._sinks: dict[int, _Sink] = {}
        self._persistent: set[int] = set()
        self._next_sink = 0
        self._live: deque[StreamItem] = deque()
        self._seen_live: Counter[tuple[str, str]] = Counter()
        # Recorded progress delivered before its live copy came (a worker may flush the
        # update to the log between buffering and publishing it): that copy is dropped.
        self._logged_first: deque[tuple[str, str]] = deque(maxlen=_LOGGED_FIRST_KEPT)
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._watchers: set[CommitWatcher] = set()  # the pump threads' commit watchers
        self._closed = False

    # -- public API ------------------------------------------------------------------

    @property
    def last_sequence(self) -> int:
        """The highest sequence handed to a consumer (``since`` before any)."""
        return self._last_sequence

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def replay(self) -> list[StreamItem]:
        """Every recorded event of the workflow, in order (does not move the cursor)."""
        items: list[StreamItem] = []
        since = 0
        while True:
            events = self.event_store.get_events(self.workflow_id, since, self.batch_size)
            items.extend(StreamItem.from_event(e) for e in events)
            if len(events) < self.batch_size:
                return items
            since = events[-1].sequence

    def on_event(
        self, callback: Callable[[StreamItem], None], *, include_history: bool = False
    ) -> None:
        """Call ``callback`` with every new item, in order, once, until :meth:`close`.

        It is called from the stream's background thread; an exception it raises is
        logged and does not stop the stream.

        Args:
            callback: Called with each :class:`StreamItem`.
            include_history: Start from the beginning of the log (when the stream has no
                ``since`` and no consumer yet).
        """

        def sink(item: StreamItem | None) -> None:
            if item is None:
                return
            try:
                callback(item)
            except Exception:
                log.exception("stream callback failed on %s", item.event_type)
            self._consumed(item)

        self._attach(sink, include_history, persistent=True)

    def follow(
        self, include_history: bool = False, timeout: float | None = None
    ) -> Iterator[StreamItem]:
        """Yield items as they come, blocking in between.

        The iterator is attached when this is called (not at the first ``next``), so
        nothing committed in between is missed. It ends after the workflow's terminal
        event (``workflow.completed``, ``.failed``, ``.canceled``) was yielded, after
        ``timeout`` seconds without any item, or when the stream is closed.

        Args:
            include_history: Yield the recorded history first (when the stream has no
                ``since`` and no consumer yet).
            timeout: Seconds of inactivity after which to stop (None: never).

        Raises:
            StreamError: The stream is closed.
        """
        inbox: queue.Queue[StreamItem | None] = queue.Queue()
        key = self._attach(inbox.put, include_history)
        return self._follow(inbox, key, timeout)

    def _follow(
        self, inbox: queue.Queue[StreamItem | None], key: int, timeout: float | None
    ) -> Iterator[StreamItem]:
        try:
            while True:
                try:
                    item = inbox.get(timeout=timeout)
                except queue.Empty:
                    return
                if item is None:
                    return
                self._consumed(item)
                yield item
                if item.is_terminal:
                    return
        finally:
            self._detach(key)

    def afollow(
        self, include_history: bool = False, timeout: float | None = None
    ) -> AsyncIterator[StreamItem]:
        """:meth:`follow` for asyncio: waits without blocking the event loop.

        Call it from a coroutine (it binds to the running loop). It ends as
        :meth:`follow` does.

        Args:
            include_history: Yield the recorded history first (when the stream has no
                ``since`` and no consumer yet).
            timeout: Seconds of inactivity after which to stop (None: never).

        Returns:
            An async iterator of the items, attached when this is called.

        Raises:
            StreamError: The stream is closed.
            RuntimeError: No event loop is running.
        """
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[StreamItem | None] = asyncio.Queue()

        def sink(item: StreamItem | None) -> None:
            # A closed loop raises RuntimeError: nobody listens any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(inbox.put_nowait, item)

        key = self._attach(sink, include_history)
        return self._afollow(inbox, key, timeout)

    async def _afollow(
        self, inbox: asyncio.Queue[StreamItem | None], key: int, timeout: float | None
    ) -> AsyncIterator[StreamItem]:
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation that arrives as the item does.
                    async with asyncio.timeout(timeout):
                        item = await inbox.get()
                except TimeoutError:
                    return
                if item is None:
                    return
                self._consumed(item)
                yield item
                if item.is_terminal:
                    return
        finally:
            self._detach(key)

    def __iter__(self) -> Iterator[StreamItem]:
        return self.follow()

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self.afollow()

    def close(self) -> None:
        """Stop the background thread and end every consumer (idempotent).

        Consumers first get everything committed (and every progress update emitted in
        this process) before the call: the README's pattern (subscribe, ``process_all``,
        close) sees the whole run (issue 14).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._stop_pump()
        inside = thread is threading.current_thread()
        if thread is not None and not inside:
            thread.join()
        if thread is not None and not inside:
            # The pump may have slept through the last commits: one more pass.
            with self._pump_lock:
                try:
                    self._pass()
                except Exception:
                    log.warning("reading events of %s failed", self.workflow_id, exc_info=True)
        with self._lock:
            sinks = list(self._sinks.values())
            self._sinks.clear()
        for sink in sinks:
            sink(None)

    def __enter__(self) -> WorkflowStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- consumers ---------------------------------------------------------------------

    def _consumed(self, item: StreamItem) -> None:
        if item.sequence > self._last_sequence:
            self._last_sequence = item.sequence

    def _attach(self, sink: _Sink, include_history: bool, persistent: bool = False) -> int:
        with self._lock:
            if self._closed:
                raise StreamError("the stream is closed")
            key = self._next_sink
            self._next_sink += 1
            self._sinks[key] = sink
            if persistent:
                self._persistent.add(key)
            if self._thread is None:
                self._start_pump(include_history)
        return key

    def _detach(self, key: int) -> None:
        thread = None
        with self._lock:
            self._sinks.pop(key, None)
            self._persistent.discard(key)
            if not self._sinks:
                # Nobody consumes: stop reading; the cursor stays for the next consumer.
                thread = self._stop_pump()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the pump ----------------------------------------------------------------------

    def _start_pump(self, include_history: bool) -> None:
        """Subscribe to the bus, fix the cursor, start the thread (under ``_lock``)."""
        # Subscribe first: a progress update emitted while the cursor is set is not lost.
        self._unsubscribe = get_event_bus().subscribe(self._on_bus, self.workflow_id)
        end = self._log_end()
        if self._cursor is None:
            self._cursor = 0 if include_history else end
            self._last_sequence = self._cursor
        self._history_end = end
        stop = threading.Event()
        self._stop = stop
        self._wake.set()  # the first pass reads at once
        self._thread = threading.Thread(
            target=self._run, args=(stop,), name=f"stream-{self.workflow_id}", daemon=True
        )
        self._thread.start()

    def _stop_pump(self) -> threading.Thread | None:
        """Tell the thread to stop and unsubscribe (under ``_lock``); returns the thread."""
        thread, self._thread = self._thread, None
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._wake_up()
        return thread

    def _wake_up(self) -> None:
        """Make the pump read the log now (also interrupts a wait for a commit)."""
        self._wake.set()
        for watcher in list(self._watchers):
            watcher.wake()

    def _log_end(self) -> int:
        since = 0
        while True:
            events = self.event_store.get_events(self.workflow_id, since, self.batch_size)
            if events:
                since = events[-1].sequence
            if len(events) < self.batch_size:
                return since

    def _on_bus(self, event: Event) -> None:
        if event.sequence == 0 and event.event_type == _PROGRESS:
            key = _progress_key(event.entity_id, event.data)
            with self._lock:
                if key in self._logged_first:
                    self._logged_first.remove(key)
                else:
                    self._live.append(StreamItem.from_event(event, source="live"))
        # Committed events are read from the log (that keeps one order and no gap);
        # their publication only says that there is something to read.
        self._wake_up()

    def _watch(self, stop: threading.Event) -> CommitWatcher | None:
        """A watcher of this workflow's commits, or None: the store cannot be watched."""
        try:
            watcher = self.event_store.watch(self.workflow_id)
        except Exception:
            log.debug("cannot watch for events of %s", self.workflow_id, exc_info=True)
            return None
        with self._lock:
            self._watchers.add(watcher)
        if stop.is_set():  # stopped before the watcher could be woken
            watcher.wake()
        return watcher

    def _drop_watcher(self, watcher: CommitWatcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)
        with contextlib.suppress(Exception):
            watcher.close()

    def _sleep(self, watcher: CommitWatcher | None) -> CommitWatcher | None:
        """Wait for a wake-up or ``poll_interval``; returns the watcher still usable."""
        if watcher is None or self._wake.is_set():
            self._wake.wait(self.poll_interval)
            return watcher
        try:
            watcher.wait(self.poll_interval)
        except Exception:
            # Read the log now, watch again on the next pass.
            log.debug("watching for events of %s failed", self.workflow_id, exc_info=True)
            self._drop_watcher(watcher)
            return None
        return watcher

    def _run(self, stop: threading.Event) -> None:
        # Watch before the first read: a later commit is then either read or noticed.
        watcher = self._watch(stop) if can_follow(self.event_store) else None
        rewatch = watcher is not None  # a store that could not be watched is polled
        try:
            while not stop.is_set():
                if rewatch and watcher is None:
                    watcher = self._watch(stop)
                watcher = self._sleep(watcher)
                self._pump(stop)
        finally:
            if watcher is not None:
                self._drop_watcher(watcher)

    def _pump(self, stop: threading.Event) -> None:
        self._wake.clear()
        with self._pump_lock:
            if stop.is_set():
                return
            try:
                self._pass()
            except Exception:
                # A failed read (database restarting, busy file) is retried next pass.
                log.warning("reading events of %s failed", self.workflow_id, exc_info=True)

    def _pass(self) -> None:
        """Deliver buffered live items, then everything new in the log (under ``_pump_lock``)."""
        with self._lock:
            live = list(self._live)
            self._live.clear()
        for item in live:
            self._seen_live[_progress_key(item.entity_id, item.data)] += 1
            self._deliver(item)
        while True:
            cursor = self._cursor or 0
            events = self.event_store.get_events(self.workflow_id, cursor, self.batch_size)
            for event in events:
                self._cursor = event.sequence
                if event.event_type == _PROGRESS:
                    key = _progress_key(event.entity_id, event.data)
                    if self._seen_live[key] > 0:
                        self._seen_live[key] -= 1
                        continue
                    self._forget_live(key)
                source: Literal["live", "replay"] = (
                    "replay" if event.sequence <= self._history_end else "live"
                )
                self._deliver(StreamItem.from_event(event, source))
            if len(events) < self.batch_size:
                return

    def _forget_live(self, key: tuple[str, str]) -> None:
        """The recorded copy of a progress update goes out first: drop its live copy."""
        with self._lock:
            for item in self._live:
                if _progress_key(item.entity_id, item.data) == key:
                    self._live.remove(item)
                    return
            self._logged_first.append(key)

    def _deliver(self, item: StreamItem) -> None:
        with self._lock:
            sinks = list(self._sinks.values())
        for sink in sinks:
            sink(item)
