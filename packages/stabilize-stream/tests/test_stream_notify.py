"""PostgreSQL: a stream wakes on the NOTIFY of commits made by workers in other processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from stabilize.backends.postgres import PostgresBackend
from stabilize.events import PostgresEventStore
from stabilize.streaming import WorkflowStream

if TYPE_CHECKING:
    from conftest import StreamEngine

WORKER = Path(__file__).with_name("stream_worker.py")
LONG_POLL = 30.0
"""A poll interval the tests must never wait out: only a notification wakes the stream."""
DEADLINE = 20.0
"""Hang guard of the follow (shorter than LONG_POLL, so a missed wake-up fails)."""


# PostgreSQL only (SQLite streams poll the log); skips without STABILIZE_TEST_PG_URL.
pytestmark = pytest.mark.parametrize("db", ["postgres"], indirect=True)


def test_stream_wakes_on_notify_from_another_process(
    db: StreamEngine, spawn: list[subprocess.Popen[str]]
) -> None:
    wf = db.chain("step", "step", "step")
    db.orchestrator().start(wf)  # nothing in this process runs it
    args = [sys.executable, str(WORKER), db.kind, db.url, str(db.schema)]
    with WorkflowStream(wf.id, poll_interval=LONG_POLL) as stream:
        items = stream.follow(include_history=True, timeout=DEADLINE)
        first = next(items)  # the first pass reads at once
        assert first.event_type == "workflow.created"
        spawn.append(
            subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
        # Every later event was committed by the other process: without its notifications
        # the stream would read the log again only after LONG_POLL (past DEADLINE).
        rest = list(items)
    streamed = [first, *rest]
    assert streamed[-1].event_type == "workflow.completed", db.describe(streamed)
    assert [i.sequence for i in streamed] == [e.sequence for e in db.events.get_events(wf.id)]
    out, err = spawn[0].communicate(timeout=db.hang_guard)
    assert spawn[0].returncode == 0, err
    assert "done" in out
    assert stream.closed


def test_close_interrupts_the_wait_and_closes_the_connection(db: StreamEngine) -> None:
    wf = db.chain("step")
    db.store.store(wf)
    stream = WorkflowStream(wf.id, poll_interval=LONG_POLL)
    items = stream.follow(include_history=True, timeout=DEADLINE)
    assert next(items).event_type == "workflow.created"
    db.wait_until(lambda: len(stream._watchers) == 1, "the stream to watch")
    (watcher,) = stream._watchers
    stream.close()  # returns without waiting out LONG_POLL (the test's timeout guards it)
    assert watcher.closed
    assert getattr(watcher, "conn", "") is None  # released: closed by the thread that listened
    assert not stream._watchers
    assert list(items) == []


def test_event_notifications_do_not_wake_queue_workers(db: StreamEngine) -> None:
    assert isinstance(db.events, PostgresEventStore)
    backend = PostgresBackend.for_url(db.url, db.schema)
    assert db.events.channel != backend.channel
    with (
        psycopg.connect(db.url, autocommit=True) as queue_conn,
        psycopg.connect(db.url, autocommit=True) as events_conn,
    ):
        queue_conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(backend.channel)))
        events_conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(db.events.channel)))
        wf = db.chain("step")
        db.store.store(wf)  # records workflow.created; enqueues nothing
        notified = next(iter(events_conn.notifies(timeout=DEADLINE)), None)
        assert notified is not None, "no notification on the events channel"
        assert notified.payload == wf.id
        # A marker sent after that commit arrives after anything the commit sent.
        with psycopg.connect(db.url, autocommit=True) as other:
            other.execute("SELECT pg_notify(%s, 'marker')", (backend.channel,))
        payloads: list[str] = []
        for note in queue_conn.notifies(timeout=DEADLINE):
            payloads.append(note.payload)
            if note.payload == "marker":
                break
    assert payloads == ["marker"]
