"""Retention: ``WorkflowStore.purge`` and ``stabilize purge`` on SQLite and PostgreSQL.

Workflows are stored now; purges run with a fake ``now`` days later instead of waiting.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from stabilize import StageExecution, TaskExecution, TaskResult, Workflow, WorkflowStatus
from stabilize.backends._base import Transaction
from stabilize.engine.messages import Message
from stabilize.events import configure_event_sourcing
from stabilize.persistence import WorkflowStore
from stabilize.tasks import Task

if TYPE_CHECKING:
    from conftest import Database

S = WorkflowStatus
DAY = 24 * 3600.0


class Done(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"done": True})


def workflow(application: str = "app", status: WorkflowStatus = S.SUCCEEDED) -> Workflow:
    stages = [
        StageExecution(
            ref_id=ref,
            type="done",
            name=f"Stage {ref}",
            requisite_stage_ref_ids=set(requires),
            tasks=[TaskExecution.create(f"{ref}-task", "done", stage_start=True, stage_end=True)],
        )
        for ref, requires in (("a", ()), ("b", ("a",)))
    ]
    wf = Workflow.create(application=application, name="retained", stages=stages)
    wf.status = status
    return wf


def rows(store: WorkflowStore, sql: str, *params: Any) -> int:
    backend = store.backend
    with backend.read() as tx:
        tx.cur.execute(sql.replace("?", backend.placeholder), params)
        return int(tx.cur.fetchone()[0])


def count(store: WorkflowStore, table: str, workflow_id: str) -> int:
    return rows(store, f"SELECT count(*) FROM {table} WHERE workflow_id = ?", workflow_id)


@pytest.fixture
def recording(backend: Database) -> None:
    """Record events in the engine's own database (its ``events`` table)."""
    configure_event_sourcing(backend.event_store())


def later(days: float) -> float:
    return time.time() + days * DAY


def test_old_completed_workflows_go_with_stages_messages_and_events(make_engine, recording):
    engine = make_engine()
    engine.registry.register("done", Done)
    finished = engine.run(workflow(status=S.NOT_STARTED))
    assert finished.status == S.SUCCEEDED
    stale = workflow(status=S.TERMINAL)
    engine.store.store(stale)
    with engine.backend.transaction() as tx:
        tx.enqueue([Message("RunTask", stale.id, stale.stages[0].id)], int(time.time() * 1000))
    assert count(engine.store, "events", finished.id) > 2
    assert count(engine.store, "stages", finished.id) == 2
    assert count(engine.store, "queue_messages", stale.id) == 1

    assert engine.store.purge(timedelta(days=30), now=later(10)) == 0
    assert engine.store.purge(timedelta(days=30), now=later(31)) == 2

    for wf in (finished, stale):
        assert not engine.store.exists(wf.id)
        for table in ("stages", "events", "queue_messages"):
            assert count(engine.store, table, wf.id) == 0, table


def test_keep_events_keeps_the_event_log(make_engine, recording):
    engine = make_engine()
    engine.registry.register("done", Done)
    finished = engine.run(workflow(status=S.NOT_STARTED))
    assert finished.status == S.SUCCEEDED
    events = count(engine.store, "events", finished.id)
    assert events > 2

    assert engine.store.purge(timedelta(days=1), keep_events=True, now=later(2)) == 1

    assert not engine.store.exists(finished.id)
    assert count(engine.store, "stages", finished.id) == 0
    assert count(engine.store, "events", finished.id) == events


def test_running_suspended_paused_and_recent_workflows_stay(backend: Database) -> None:
    store = backend.store()
    kept = {s: workflow(status=s) for s in (S.RUNNING, S.SUSPENDED, S.PAUSED, S.NOT_STARTED)}
    for wf in kept.values():
        store.store(wf)
    old = workflow(status=S.CANCELED)
    store.store(old)

    assert store.purge(timedelta(hours=1), now=later(0)) == 0  # ended just now: recent
    assert store.purge(timedelta(hours=1), now=later(365)) == 1

    assert not store.exists(old.id)
    for status, wf in kept.items():
        assert store.retrieve(wf.id).status == status


def test_batches_are_separate_transactions(
    backend: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.store()
    for _ in range(5):
        store.store(workflow(status=S.STOPPED))
    original = store.backend.transaction
    opened = []

    @contextmanager
    def counting() -> Iterator[Transaction]:
        with original() as tx:
            opened.append(tx)
            yield tx

    def transaction() -> AbstractContextManager[Transaction]:
        return counting()

    monkeypatch.setattr(store.backend, "transaction", transaction)

    assert store.purge(timedelta(days=1), batch_size=2, now=later(2)) == 5

    assert len(opened) == 3  # 2 + 2 + 1
    assert store.count() == 0


def test_application_filter_and_dry_run(backend: Database) -> None:
    store = backend.store()
    mine = [workflow("mine") for _ in range(3)]
    theirs = workflow("theirs")
    for wf in [*mine, theirs]:
        store.store(wf)

    assert store.purge(timedelta(days=1), application="mine", now=later(2), dry_run=True) == 3
    assert store.count() == 4
    assert store.purge(timedelta(days=1), application="mine", now=later(2)) == 3
    assert store.count() == 1
    assert store.exists(theirs.id)


def test_delete_removes_the_events_too(make_engine, recording):
    engine = make_engine()
    engine.registry.register("done", Done)
    finished = engine.run(workflow(status=S.NOT_STARTED))
    assert finished.status == S.SUCCEEDED
    assert count(engine.store, "events", finished.id) > 0

    engine.store.delete(finished.id)

    assert count(engine.store, "events", finished.id) == 0
    assert count(engine.store, "stages", finished.id) == 0


def test_purge_refuses_bad_arguments(backend: Database) -> None:
    store = backend.store()
    with pytest.raises(ValueError, match="batch_size"):
        store.purge(timedelta(days=1), batch_size=0)
    with pytest.raises(ValueError, match="older_than"):
        store.purge(timedelta(days=-1))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stabilize", "purge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_purges_dry_runs_and_refuses_bad_durations(backend: Database) -> None:
    store = backend.store()
    wf = workflow()
    store.store(wf)
    db = ["--db-url", backend.url] + (["--schema", backend.schema] if backend.schema else [])

    bad = cli(*db, "--older-than", "3 weeks")
    assert bad.returncode == 2
    assert "not a duration: '3 weeks'" in bad.stderr

    # Just stored: a day-old cutoff keeps it.
    kept = cli(*db, "--older-than", "1d")
    assert (kept.returncode, kept.stdout) == (0, "deleted 0 workflows\n")

    dry = cli(*db, "--older-than", "0s", "--dry-run", "--application", "app")
    assert (dry.returncode, dry.stdout) == (0, "would delete 1 workflow\n")
    assert store.exists(wf.id)

    done = cli(*db, "--older-than", "0s", "--batch-size", "10", "--keep-events")
    assert (done.returncode, done.stdout) == (0, "deleted 1 workflow\n"), done.stderr
    assert not store.exists(wf.id)
