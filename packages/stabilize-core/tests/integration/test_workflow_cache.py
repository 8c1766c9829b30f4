"""The cache of workflows a process keeps between its transactions.

A transition reuses the cached workflow while it is current. On SQLite the file's
``data_version`` tells when another connection committed: until it moves, a workflow the
last transactions left in the cache is used without reading its version. These tests
pin down that a change made through another connection is always seen, that a deleted
workflow is never served from the cache, and that the read is really skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stabilize import StageExecution, TaskResult, Workflow
from stabilize.backends.sqlite import SqliteBackend
from stabilize.engine.messages import Effects

# The counter of other connections' commits is SQLite's (PostgreSQL reads every version).
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def one_stage(name: str = "cached") -> Workflow:
    return Workflow.create("tests", name, [StageExecution.for_task("a", "work")])


def note(backend: Any, workflow_id: str, value: str) -> None:
    """Set ``context["note"]`` of a workflow in one transaction of ``backend``."""
    with backend.transaction() as tx:
        wf = tx.workflow(workflow_id)
        assert wf is not None
        wf.context["note"] = value
        tx.save(wf, Effects(workflow_changed=True), 1_000)


def seen_note(backend: Any, workflow_id: str) -> Any:
    with backend.transaction() as tx:
        wf = tx.workflow(workflow_id)
        assert wf is not None
        return wf.context.get("note")


@pytest.fixture
def engine(make_engine: Any) -> Any:
    built = make_engine()
    built.registry.register("work", lambda stage: TaskResult.success())
    return built


@pytest.fixture
def other(engine: Any) -> Iterator[tuple[Any, SqliteBackend]]:
    """The engine, and a second connection to its file (as another process would hold)."""
    second = SqliteBackend(engine.path, create=False)
    try:
        yield engine, second
    finally:
        second.close()


def test_a_change_through_another_connection_is_seen(other):
    engine, second = other
    wf = one_stage()
    engine.store.store(wf)
    note(engine.backend, wf.id, "first")  # cached, as of the file's counter now
    note(second, wf.id, "second")
    assert seen_note(engine.backend, wf.id) == "second"
    note(engine.backend, wf.id, "third")
    assert seen_note(second, wf.id) == "third"


def test_a_workflow_cached_before_another_connection_committed_is_read_again(other):
    # The other connection changes w1; this process's next transaction touches only w2
    # (and caches it as of the new counter): w1, cached before, must still be read again.
    engine, second = other
    w1, w2 = one_stage("w1"), one_stage("w2")
    engine.store.store(w1)
    engine.store.store(w2)
    note(engine.backend, w1.id, "mine")
    note(engine.backend, w2.id, "mine")
    note(second, w1.id, "theirs")
    note(engine.backend, w2.id, "again")
    assert seen_note(engine.backend, w1.id) == "theirs"


def test_a_current_cached_workflow_is_used_without_reading_its_version(engine):
    wf = one_stage()
    engine.store.store(wf)
    note(engine.backend, wf.id, "first")
    statements: list[str] = []
    engine.backend.conn.set_trace_callback(statements.append)
    try:
        assert seen_note(engine.backend, wf.id) == "first"
    finally:
        engine.backend.conn.set_trace_callback(None)
    reads = [s for s in statements if "FROM workflows" in s]
    assert reads == [], reads


def test_a_deleted_workflow_is_not_served_from_the_cache(engine):
    wf = one_stage()
    engine.store.store(wf)
    note(engine.backend, wf.id, "cached")
    engine.store.delete(wf.id)
    with engine.backend.transaction() as tx:
        assert tx.workflow(wf.id) is None


def test_forget_drops_a_workflow_from_the_cache_within_the_transaction(engine):
    wf = one_stage()
    engine.store.store(wf)
    note(engine.backend, wf.id, "cached")
    with engine.backend.transaction() as tx:
        assert tx.workflow(wf.id) is not None
        tx.forget([wf.id])
        assert wf.id not in tx.touched
        assert engine.backend.cache.get(wf.id) is None
    assert engine.backend.cache.get(wf.id) is None  # not put back by the commit
