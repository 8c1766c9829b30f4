"""The PostgreSQL rights docs/security.md grants a worker and a reader are enough, and no more.

The GRANT statements are read from the guide itself (the ``sql`` blocks after
``<!-- grants: worker -->`` and ``<!-- grants: reader -->``), so the guide cannot drift
from what was tested. Each test migrates a fresh schema as the server's user, creates LOGIN
roles holding exactly those grants, and works as them; the roles are dropped at teardown.
Without the right to create roles, or to log in as one, the tests skip saying so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from stabilize import (
    Orchestrator,
    PostgresQueue,
    PostgresWorkflowStore,
    QueueProcessor,
    QueueProcessorConfig,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
)
from stabilize.backends.postgres import PostgresBackend
from stabilize.events import open_event_store

if TYPE_CHECKING:
    from conftest import PgSchemas

pytestmark = pytest.mark.postgres

GUIDE = Path(__file__).resolve().parents[4] / "docs" / "security.md"
DOC_SCHEMA = "stabilize"
"""The schema name the guide's statements use (replaced by the test's schema)."""
DOC_ROLES = {"worker": "stabilize_worker", "reader": "stabilize_reader"}
"""The role names the guide's statements use (replaced by the test's roles)."""

FastRetries = QueueProcessorConfig(
    poll_frequency_ms=10,
    transient_backoff_base_seconds=0.01,
    transient_backoff_max_seconds=0.05,
    transient_jitter=0.0,
)


def guide_grants(kind: str) -> list[str]:
    """The statements of the guide's ``sql`` block for ``kind``, without CREATE ROLE."""
    text = GUIDE.read_text(encoding="utf-8")
    found = re.search(rf"<!-- grants: {kind} -->\s*```sql\n(.*?)```", text, re.DOTALL)
    assert found, f"docs/security.md has no sql block after <!-- grants: {kind} -->"
    lines = [line for line in found.group(1).splitlines() if not line.lstrip().startswith("--")]
    statements = [" ".join(s.split()) for s in "\n".join(lines).split(";")]
    return [s for s in statements if s and not s.upper().startswith("CREATE ROLE")]


def for_test(statement: str, schema: str, roles: dict[str, str]) -> str:
    """A guide statement with the test's schema and role names."""
    for kind, doc_name in DOC_ROLES.items():
        statement = re.sub(rf"\b{doc_name}\b", roles[kind], statement)
    statement = re.sub(rf"\b{DOC_SCHEMA}\b(?=\.)", schema, statement)
    return re.sub(rf"\bSCHEMA {DOC_SCHEMA}\b", f"SCHEMA {schema}", statement)


def url_as(pg_url: str, role: str) -> str:
    """``pg_url`` logging in as ``role`` (no password: the test server trusts local logins)."""
    params = conninfo_to_dict(pg_url)
    host = params.get("host") or ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{quote(role)}@{quote(str(host))}{port}/{quote(str(params['dbname']))}"


class Roles:
    """LOGIN roles of one test, granted what the guide says, dropped at teardown."""

    def __init__(self, pg_url: str, schema: str) -> None:
        self.pg_url = pg_url
        self.schema = schema
        self.names = {kind: f"{schema}_{kind}" for kind in DOC_ROLES}
        self.created: list[str] = []

    def create(self) -> None:
        """Create both roles and run the guide's GRANT statements for them."""
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            for name in self.names.values():
                try:
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
                except psycopg.errors.InsufficientPrivilege as exc:
                    pytest.skip(f"the test server's user cannot create roles: {exc}")
                self.created.append(name)
            for kind in DOC_ROLES:
                for statement in guide_grants(kind):
                    conn.execute(for_test(statement, self.schema, self.names).encode())
        for name in self.names.values():
            try:
                psycopg.connect(url_as(self.pg_url, name)).close()
            except psycopg.OperationalError as exc:
                pytest.skip(f"cannot log in as a role without a password here: {exc}")

    def url(self, kind: str) -> str:
        return url_as(self.pg_url, self.names[kind])

    def drop(self) -> None:
        # Roles are server-wide: they outlive the schema unless dropped here. The pools of
        # the roles' connections close first (as conftest's close_pg_backends does).
        for key, backend in list(PostgresBackend._instances.items()):
            if key[1] == self.schema:
                backend.close()
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            for name in reversed(self.created):
                role = sql.Identifier(name)
                conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
                conn.execute(sql.SQL("DROP ROLE {}").format(role))
        self.created.clear()


@pytest.fixture
def roles(pg_url: str, pg_schemas: PgSchemas) -> Iterator[Roles]:
    """A schema migrated by the server's user, and a worker and a reader role on it."""
    schema = pg_schemas.create()
    PostgresWorkflowStore(pg_url, schema=schema).backend.close()
    made = Roles(pg_url, schema)
    try:
        made.create()
        yield made
    finally:
        made.drop()


def stage(ref: str, task: str, requires: set[str] | None = None, **extra: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(f"{ref}.{task}", task)],
        **extra,
    )


def run_as_worker(
    roles: Roles, workflow: Workflow, registry: TaskRegistry
) -> tuple[PostgresWorkflowStore, Workflow]:
    url = roles.url("worker")
    store = PostgresWorkflowStore(url, schema=roles.schema)
    queue = PostgresQueue(url, schema=roles.schema, lock_duration=timedelta(seconds=30))
    # Submitted before the worker attaches its registry, as by another process: a registry
    # in this process would refuse an unknown task type at start.
    store.store(workflow)
    Orchestrator(queue, store).start(workflow)
    processor = QueueProcessor(queue, store=store, task_registry=registry, config=FastRetries)
    try:
        processor.process_all(timeout=30)
    finally:
        processor.stop(wait=True, timeout=10)
    return store, store.retrieve(workflow.id)


def as_role(url: str, schema: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True, options=f"-csearch_path={schema}") as conn:
        conn.execute(statement.encode())


def test_a_worker_with_the_guides_grants_runs_a_workflow_and_purges_it(roles: Roles) -> None:
    registry = TaskRegistry()
    tries: list[str] = []

    def flaky(s: StageExecution) -> TaskResult:
        tries.append(s.ref_id)
        if len(tries) == 1:
            raise TransientError("first try fails")  # retried through a delayed message
        return TaskResult.success(outputs={"done": True})

    registry.register("fetch", lambda s: TaskResult.success(outputs={"n": 1}))
    registry.register("step", lambda s: TaskResult.success(outputs={f"{s.ref_id}_n": 2}))
    registry.register("flaky", flaky)
    workflow = Workflow.create(
        application="least-privilege",
        name="grants",
        stages=[
            stage("a", "fetch"),
            # One mutex key on two parallel stages: one holds it, the other waits.
            stage("b", "step", {"a"}, mutex_key="shared"),
            stage("c", "step", {"a"}, mutex_key="shared"),
            stage("d", "flaky", {"b", "c"}),
        ],
    )

    store, done = run_as_worker(roles, workflow, registry)

    assert done.status is WorkflowStatus.SUCCEEDED
    assert [s.status for s in done.stages] == [WorkflowStatus.SUCCEEDED] * 4
    assert tries == ["d", "d"]
    reader = open_event_store(roles.url("reader"), roles.schema, create=False)
    events = reader.get_events(done.id)
    assert events, "the worker recorded no events"
    assert reader.recent_heads(0, "least-privilege") == {done.id: events[-1].sequence}
    assert store.purge(timedelta(0)) == 1
    assert not store.exists(done.id)
    assert reader.get_events(done.id) == []


def test_the_grants_cover_every_table_and_sequence_of_the_schema(roles: Roles) -> None:
    worker = " ".join(guide_grants("worker"))
    with psycopg.connect(roles.pg_url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'S')",
            (roles.schema,),
        ).fetchall()
    missing = [name for name, _ in found if not re.search(rf"\.{name}\b", worker)]

    # A table a later migration adds must be granted in the guide (and so tested above).
    assert {kind for _, kind in found} == {"r", "S"}
    assert missing == []


def test_the_roles_can_do_nothing_else(roles: Roles) -> None:
    worker, reader = roles.url("worker"), roles.url("reader")
    refused: list[tuple[str, str]] = []
    attempts = [
        (worker, "CREATE TABLE extra (i int)"),
        (worker, "DROP TABLE events"),
        (worker, "TRUNCATE workflows"),
        (worker, "DELETE FROM stabilize_schema_version"),
        (
            reader,
            "INSERT INTO workflows (id, application, name, status, created_at, "
            "updated_at, version, body) VALUES ('x', 'a', 'n', 'RUNNING', 0, 0, 0, '{}')",
        ),
        (reader, "DELETE FROM events"),
        (reader, "SELECT count(*) FROM queue_messages"),
    ]
    for url, statement in attempts:
        try:
            as_role(url, roles.schema, statement)
        except psycopg.errors.InsufficientPrivilege as exc:
            refused.append((statement, str(exc)))

    assert [s for s, _ in refused] == [s for _, s in attempts]
    assert all("permission denied" in text or "must be owner" in text for _, text in refused)


def test_a_worker_that_cannot_migrate_names_the_missing_right(
    roles: Roles, pg_schemas: PgSchemas
) -> None:
    # A schema the worker role may use but that nobody migrated yet: it must not half-create it.
    empty = pg_schemas.create()
    with psycopg.connect(roles.pg_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(empty), sql.Identifier(roles.names["worker"])
            )
        )

    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        PostgresWorkflowStore(roles.url("worker"), schema=empty)

    with psycopg.connect(roles.pg_url, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (empty,)
        ).fetchone()
    assert left == (0,)


def test_a_registry_that_shadows_the_process_tasks_runs_none_of_them(
    roles: Roles, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    registry = TaskRegistry(builtins={"noop", "wait", "http"}, plugins=False)  # as the guide
    assert not any(registry.has(name) for name in ("shell", "python", "docker", "ssh"))
    shell_stage = stage("run", "shell")
    shell_stage.context["command"] = f"touch {marker}"
    workflow = Workflow.create(application="least-privilege", name="shadow", stages=[shell_stage])

    _, done = run_as_worker(roles, workflow, registry)

    assert done.status is WorkflowStatus.TERMINAL
    details = done.stage_by_ref_id("run").tasks[0].task_exception_details or {}
    assert (
        "no task registered as 'shell' on this worker (registered: http, noop, wait)"
        in (details["message"])
    )
    assert not marker.exists()
