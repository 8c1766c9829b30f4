"""EventStore.watch(): each dialect notices commits of other processes and connections.

PostgreSQL listens for the NOTIFY each commit that records events sends; SQLite looks at
the file's ``data_version``; commits of this process arrive through the event bus.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from stabilize import StageExecution, TaskExecution, Workflow
from stabilize.events import can_follow, follow_commits

DEADLINE = 20.0
"""Hang guard of a wait that must end with a commit (never waited out when it works)."""
QUIET = 0.2
"""How long a wait that must time out waits."""

STORE_ONE = """
import sys
from stabilize import StageExecution, TaskExecution, Workflow
from stabilize.connect import open_database

url, schema = sys.argv[1], (sys.argv[2] if sys.argv[2] != "-" else None)
store, _ = open_database(url, schema)
task = TaskExecution.create("a", "noop", stage_start=True, stage_end=True)
stage = StageExecution(ref_id="a", type="noop", name="a", tasks=[task])
wf = Workflow.create(application="tests", name="other", stages=[stage])
store.store(wf)
print(wf.id)
"""


def one_stage() -> Workflow:
    task = TaskExecution.create("a", "noop", stage_start=True, stage_end=True)
    stage = StageExecution(ref_id="a", type="noop", name="a", tasks=[task])
    return Workflow.create(application="tests", name="watched", stages=[stage])


def commit_in_another_process(db: Any) -> str:
    """Store a workflow from another process (its events are recorded); its id."""
    done = subprocess.run(
        [sys.executable, "-c", STORE_ONE, db.url, db.schema or "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def commit_on_another_connection(db: Any) -> None:
    """A commit this process's engine knows nothing about (no event bus involved)."""
    if db.is_postgres:
        import psycopg

        channel = db.event_store().channel
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, 'elsewhere')", (channel,))
        return
    import sqlite3

    from stabilize.backends.sqlite import sqlite_path

    probe = sqlite3.connect(sqlite_path(db.url), isolation_level=None)
    try:
        probe.execute("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
        probe.execute("INSERT INTO probe VALUES (1)")
    finally:
        probe.close()


def test_a_commit_of_another_process_wakes_the_wait(backend):
    backend.store()
    watcher = backend.event_store().watch()
    try:
        commit_in_another_process(backend)
        assert watcher.wait(DEADLINE) is True
    finally:
        watcher.close()


def test_a_commit_on_another_connection_wakes_the_wait(backend):
    backend.store()
    watcher = backend.event_store().watch()
    try:
        assert watcher.wait(QUIET) is False
        commit_on_another_connection(backend)
        assert watcher.wait(DEADLINE) is True
        assert watcher.wait(QUIET) is False  # noticed once
    finally:
        watcher.close()


def test_a_wait_without_a_commit_times_out(backend):
    backend.store()
    watcher = backend.event_store().watch()
    try:
        assert watcher.wait(QUIET) is False
        assert watcher.wait(0) is False
    finally:
        watcher.close()


def test_a_commit_of_this_process_wakes_the_wait_at_once(backend):
    store = backend.store()
    watcher = backend.event_store().watch()
    try:
        store.store(one_stage())
        assert watcher.wait(DEADLINE) is True
    finally:
        watcher.close()


def test_wake_interrupts_a_wait_and_close_ends_it(backend):
    backend.store()
    watcher = backend.event_store().watch()
    results: list[bool] = []
    waiting = threading.Thread(target=lambda: results.append(watcher.wait(DEADLINE * 3)))
    waiting.start()
    watcher.wake()
    waiting.join(DEADLINE)
    assert not waiting.is_alive()
    assert results == [False]
    watcher.close()
    assert watcher.closed
    assert watcher.wait(DEADLINE) is False  # returns at once once closed
    watcher.close()  # twice is fine


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # SQLite's watcher sleeps
def test_a_wake_just_after_a_pause_timed_out_is_not_lost(backend):
    # The watcher looks at the file between pauses of `interval`; a wake landing right
    # after one pause timed out must end the wait, not be cleared by it.
    backend.store()
    watcher = backend.event_store().watch(interval=0.01)
    woke: list[bool] = []

    class WakeAfterTimeout(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            got = super().wait(timeout)
            if not got and not woke:
                woke.append(True)
                watcher.wake()
            return got

    watcher._signal = WakeAfterTimeout()
    results: list[bool] = []
    waiting = threading.Thread(target=lambda: results.append(watcher.wait(DEADLINE * 3)))
    waiting.start()
    waiting.join(DEADLINE)
    try:
        assert not waiting.is_alive(), "the wake was lost: the wait sleeps on"
        assert woke == [True]
        assert results == [False]
    finally:
        watcher.close()
        waiting.join()


def test_a_watcher_made_before_the_commit_notices_it_without_waiting_first(backend):
    backend.store()
    watcher = backend.event_store().watch()
    try:
        commit_on_another_connection(backend)  # before any wait
        assert watcher.wait(DEADLINE) is True
    finally:
        watcher.close()


POSTGRES_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@POSTGRES_ONLY
def test_postgres_wakes_only_for_the_watched_workflow(backend):
    backend.store()
    watcher = backend.event_store().watch("some-other-workflow")
    try:
        commit_in_another_process(backend)
        assert watcher.wait(QUIET * 5) is False
    finally:
        watcher.close()


@POSTGRES_ONLY
def test_postgres_listens_again_after_its_connection_is_killed(backend):
    import psycopg

    from stabilize.backends.postgres import EventListener

    backend.store()
    watcher = backend.event_store().watch()
    assert isinstance(watcher, EventListener)
    try:
        assert watcher.conn is not None
        killed = watcher.conn.info.backend_pid
        with psycopg.connect(backend.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (killed,))
        # Commits may have gone unnoticed while the connection was down: the wait says so,
        # once, and the watcher listens on a new connection.
        assert watcher.wait(DEADLINE) is True
        assert watcher.conn is not None
        assert watcher.conn.info.backend_pid != killed
        assert watcher.wait(QUIET) is False
        commit_on_another_connection(backend)
        assert watcher.wait(DEADLINE) is True
    finally:
        watcher.close()


def test_follow_commits_calls_back_on_start_and_on_each_commit(backend):
    backend.store()
    calls = threading.Semaphore(0)
    stop = follow_commits(backend.event_store(), calls.release)
    try:
        assert calls.acquire(timeout=DEADLINE)  # once when watching starts
        commit_in_another_process(backend)
        assert calls.acquire(timeout=DEADLINE)
    finally:
        stop()
    stop()  # twice is fine


class LogWithoutWatch:
    """An event store of the protocol's older shape: it cannot be watched."""

    def get_events(self, workflow_id: str, since: int = 0, limit: int | None = None) -> list[Any]:
        return []


def test_a_store_without_watch_cannot_be_followed(backend):
    assert can_follow(backend.event_store())
    assert not can_follow(LogWithoutWatch())
