"""PostgresWorkflowStore and PostgresQueue on a real server: storing, listing, sharing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from stabilize import (
    PostgresQueue,
    PostgresWorkflowStore,
    QueueProcessor,
    SqliteQueue,
    TaskRegistry,
    WorkflowNotFoundError,
    WorkflowStatus,
)
from stabilize.backends.postgres import PoolOptions, PostgresBackend, notify_channel

pytestmark = pytest.mark.postgres


def test_store_retrieve_roundtrip(pg_url, pg_schema, build):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    wf = build.workflow(
        build.stage("a", "noop", context={"n": 1, "nested": {"k": ["v", 2]}}),
        build.stage("b", "noop", {"a"}),
        name="roundtrip",
        owner="ops",
    )

    store.store(wf)
    got = store.retrieve(wf.id)

    assert got is not wf
    assert got.id == wf.id
    assert got.name == "roundtrip"
    assert got.context == {"owner": "ops"}
    assert got.status is WorkflowStatus.NOT_STARTED
    assert [s.ref_id for s in got.stages] == ["a", "b"]
    assert got.stage_by_ref_id("a").context == {"n": 1, "nested": {"k": ["v", 2]}}
    assert got.stage_by_ref_id("b").requisite_stage_ref_ids == {"a"}
    assert store.exists(wf.id)


def test_retrieve_unknown_id_raises(pg_url, pg_schema):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)

    with pytest.raises(WorkflowNotFoundError, match="nope"):
        store.retrieve("nope")
    assert not store.exists("nope")


def test_storing_twice_is_refused(pg_url, pg_schema, build):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    wf = build.workflow(build.stage("a", "noop"))
    store.store(wf)

    with pytest.raises(ValueError, match="already stored"):
        store.store(wf)


def test_list_count_filter_and_delete(pg_url, pg_schema, build):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    made = [build.workflow(build.stage("a", "noop"), name=f"job_{i}%") for i in range(5)]
    for wf in made:
        store.store(wf)

    listed = store.list_workflows(application="tests")
    assert [w.id for w in listed] == [w.id for w in reversed(made)]
    assert [w.id for w in store.list_workflows(limit=2, offset=1)] == [made[3].id, made[2].id]
    assert [w.id for w in store.list_workflows(name="job_3%")] == [made[3].id]
    assert store.list_workflows(name="job_3_") == []
    assert store.count() == 5
    assert store.count(application="tests", status=WorkflowStatus.NOT_STARTED) == 5
    assert store.count(status=[WorkflowStatus.RUNNING, WorkflowStatus.SUCCEEDED]) == 0
    assert store.list_workflows(application="other") == []

    store.delete(made[0].id)

    assert store.count() == 4
    assert not store.exists(made[0].id)


def test_store_and_queue_of_one_schema_share_a_backend(pg_url, pg_schema):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    queue = PostgresQueue(pg_url, schema=pg_schema)

    assert store.backend is queue.backend
    QueueProcessor(queue, store=store, task_registry=TaskRegistry())  # accepted


def test_store_and_queue_of_different_schemas_are_refused(pg_url, pg_schema, fresh_schema_name):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    queue = PostgresQueue(pg_url, schema=fresh_schema_name)

    assert store.backend is not queue.backend
    with pytest.raises(ValueError, match="same database"):
        QueueProcessor(queue, store=store)


def test_a_postgres_store_with_a_sqlite_queue_is_refused(pg_url, pg_schema, tmp_path):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema)
    queue = SqliteQueue(f"sqlite:///{tmp_path / 'q.db'}")

    with pytest.raises(ValueError, match="same database"):
        QueueProcessor(queue, store=store)


def test_queue_table_name_other_than_the_default_is_refused(pg_url, pg_schema):
    with pytest.raises(ValueError, match="queue_messages"):
        PostgresQueue(pg_url, table_name="jobs", schema=pg_schema)


def test_location_hides_the_password(pg_url, pg_schema):
    with_password = make_conninfo(pg_url, password="s3cr3t")  # trust auth ignores it
    backend = PostgresBackend(with_password, pg_schema)
    try:
        assert "s3cr3t" not in backend.location
        assert pg_schema in backend.location
    finally:
        backend.close()


@pytest.mark.parametrize("bad", ["1abc", "has space", "semi;colon", "x" * 64, 'q"uote'])
def test_invalid_schema_names_are_refused(pg_url, bad):
    with pytest.raises(ValueError, match="invalid schema name"):
        PostgresWorkflowStore(pg_url, schema=bad)


def test_is_healthy(pg_url, pg_schema):
    store = PostgresWorkflowStore(pg_url, schema=pg_schema, health_timeout=5.0)

    assert store.is_healthy()


def test_pool_options_are_validated():
    with pytest.raises(ValueError, match="min_size"):
        PoolOptions(min_size=5, max_size=2)


def test_pool_options_reach_the_pool(pg_url, pg_schema):
    store = PostgresWorkflowStore(
        pg_url, schema=pg_schema, options=PoolOptions(min_size=0, max_size=3)
    )
    backend = store.backend
    assert isinstance(backend, PostgresBackend)

    assert (backend.pool.min_size, backend.pool.max_size) == (0, 3)


def _one_connection_backend(pg_url: str, pg_schema: str, configure: Any = None) -> PostgresBackend:
    options = PoolOptions(min_size=1, max_size=1, acquire_timeout=5, configure=configure)
    store = PostgresWorkflowStore(pg_url, schema=pg_schema, options=options)
    backend = store.backend
    assert isinstance(backend, PostgresBackend)
    return backend


def test_connections_go_back_to_the_pool_on_the_callers_thread(pg_url, pg_schema, monkeypatch):
    # The pool's reset hook ran on its worker thread: every transaction woke that thread
    # and the next one waited for the connection to come back from it.
    backend = _one_connection_backend(pg_url, pg_schema)
    tasks: list[object] = []
    monkeypatch.setattr(backend.pool, "run_task", tasks.append)

    for _ in range(3):
        with backend.transaction() as tx:
            tx.cur.execute("SELECT 1")
        with backend.read() as tx:
            tx.cur.execute("SELECT 1")

    assert tasks == []
    assert backend.pool.get_stats()["pool_available"] == 1


def test_a_read_leaves_its_connection_read_write_and_read_committed(pg_url, pg_schema):
    backend = _one_connection_backend(pg_url, pg_schema)

    def settings(read: bool) -> tuple[str, str]:
        with backend.read() if read else backend.transaction() as tx:
            tx.cur.execute(
                "SELECT current_setting('transaction_isolation'), "
                "current_setting('transaction_read_only')"
            )
            row = tx.cur.fetchone()
        return row[0], row[1]

    assert settings(read=True) == ("repeatable read", "on")
    # The same (only) connection, lent out again for a write.
    assert settings(read=False) == ("read committed", "off")
    assert settings(read=True) == ("repeatable read", "on")
    assert settings(read=False) == ("read committed", "off")


def test_a_read_whose_connection_broke_does_not_break_the_next_transaction(pg_url, pg_schema):
    backend = _one_connection_backend(pg_url, pg_schema)

    def read_and_lose_the_connection() -> None:
        with backend.read() as tx:
            tx.cur.execute("SELECT 1")
            # The server ends this session, as a restart or an administrator would.
            tx.cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(psycopg.OperationalError):
        read_and_lose_the_connection()

    with backend.transaction() as tx:
        tx.cur.execute("SELECT current_setting('transaction_read_only')")
        assert tx.cur.fetchone()[0] == "off"


def _table_t(backend: PostgresBackend) -> None:
    with backend.transaction() as tx:
        tx.cur.execute("CREATE TABLE t (n int)")


def _insert_then_fail(backend: PostgresBackend) -> None:
    with backend.transaction() as tx:
        tx.cur.execute("INSERT INTO t VALUES (1)")
        tx.cur.execute("SELECT count(*) FROM t")
        assert tx.cur.fetchone() == (1,)  # sent and waited for
        raise RuntimeError("boom")


def _rows_of_t(backend: PostgresBackend) -> list[int]:
    with backend.read() as tx:
        tx.cur.execute("SELECT n FROM t ORDER BY n")
        return [n for (n,) in tx.cur.fetchall()]


def test_a_transaction_that_fails_after_a_round_trip_keeps_nothing(pg_url, pg_schema):
    # The connection is in autocommit mode: only the transaction's own BEGIN keeps the
    # statements sent before a round trip from being committed one by one.
    backend = _one_connection_backend(pg_url, pg_schema)
    _table_t(backend)

    with pytest.raises(RuntimeError, match="boom"):
        _insert_then_fail(backend)

    assert _rows_of_t(backend) == []
    with backend.read() as tx:
        tx.cur.execute("SELECT current_setting('transaction_read_only')")
        assert tx.cur.fetchone() == ("on",)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), backend.read() as tx:
        tx.cur.execute("INSERT INTO t VALUES (2)")


def test_a_read_sees_one_snapshot_from_its_first_statement(pg_url, pg_schema, pg_query):
    # The read's BEGIN goes out with its first statement, in one pipeline: that statement
    # already runs in the REPEATABLE READ transaction, so a commit made after it is not
    # seen by the statements that follow.
    backend = _one_connection_backend(pg_url, pg_schema)
    _table_t(backend)

    with backend.read() as tx:
        tx.cur.execute("SELECT count(*) FROM t")
        assert tx.cur.fetchone() == (0,)
        pg_query("INSERT INTO t VALUES (7)")  # committed by another session
        tx.cur.execute("SELECT count(*) FROM t")
        assert tx.cur.fetchone() == (0,)

    assert _rows_of_t(backend) == [7]


def test_a_configure_hook_that_turns_autocommit_off_changes_nothing(pg_url, pg_schema):
    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.autocommit = False

    backend = _one_connection_backend(pg_url, pg_schema, configure)
    _table_t(backend)
    with pytest.raises(RuntimeError, match="boom"):
        _insert_then_fail(backend)
    with backend.transaction() as tx:
        tx.cur.execute("INSERT INTO t VALUES (2)")

    assert _rows_of_t(backend) == [2]


def _session(backend: PostgresBackend) -> tuple[str, str, int | None]:
    with backend.transaction() as tx:
        tx.cur.execute("SELECT current_setting('plan_cache_mode'), current_schema()")
        mode, schema = tx.cur.fetchone()
    with backend.pool.connection() as conn:
        threshold = conn.prepare_threshold
    return mode, schema, threshold


def test_pooled_connections_plan_a_statement_once_and_prepare_it_at_once(pg_url, pg_schema):
    backend = _one_connection_backend(pg_url, pg_schema)

    assert _session(backend) == ("force_generic_plan", pg_schema, 0)


def test_options_given_as_none_are_no_options(pg_url, pg_schema):
    options = PoolOptions(max_size=1, connect_kwargs={"options": None})
    backend = PostgresWorkflowStore(pg_url, schema=pg_schema, options=options).backend
    assert isinstance(backend, PostgresBackend)

    assert _session(backend) == ("force_generic_plan", pg_schema, 0)


def test_the_callers_plan_and_prepare_settings_win(pg_url, pg_schema):
    options = PoolOptions(
        max_size=1,
        connect_kwargs={"options": "-c plan_cache_mode=auto", "prepare_threshold": 5},
    )
    backend = PostgresWorkflowStore(pg_url, schema=pg_schema, options=options).backend
    assert isinstance(backend, PostgresBackend)

    assert _session(backend) == ("auto", pg_schema, 5)


def test_notify_channels_differ_by_schema_and_are_legal():
    assert notify_channel("a") != notify_channel("b")
    assert notify_channel(None) == "stabilize_public"
    long = notify_channel("s" * 63)
    assert len(long) <= 63
    assert long != notify_channel("s" * 62 + "t")
