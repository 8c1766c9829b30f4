"""An agent checkpoint stored by an older stabilize (``_agent`` in the context) resumes.

Migration 0004 moves it into the state of the agent's task; the loop then carries on from
the committed step: the model is not asked again and the pending tool call keeps its key.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from ulid import ULID

from stabilize import (
    Orchestrator,
    PostgresQueue,
    PostgresWorkflowStore,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
    WorkflowStatus,
)
from stabilize.llm import AgentLoopTask, ScriptedModel, ToolCall, ToolRegistry, tool

S = WorkflowStatus
PG_URL_ENV = "STABILIZE_TEST_PG_URL"


class Database:
    """A fresh SQLite file, or a fresh PostgreSQL schema."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema

    def engine(self, agent: AgentLoopTask) -> tuple[Any, QueueProcessor, Orchestrator]:
        if self.schema is not None:
            store: Any = PostgresWorkflowStore(self.url, schema=self.schema)
            queue: Any = PostgresQueue(self.url, schema=self.schema)
        else:
            store = SqliteWorkflowStore(self.url, create_tables=True)
            queue = SqliteQueue(self.url)
            queue._create_table()
        registry = TaskRegistry()
        registry.register("agent", agent)
        return (
            store,
            QueueProcessor(queue, store=store, task_registry=registry),
            Orchestrator(queue, store=store),
        )

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run SQL on a connection of its own (``?`` placeholders), as an older stabilize."""
        if self.schema is not None:
            import psycopg

            with psycopg.connect(
                self.url, autocommit=True, options=f"-csearch_path={self.schema}"
            ) as conn:
                cur = conn.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []
        conn2 = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            return conn2.execute(sql, params).fetchall()
        finally:
            conn2.close()

    def mark_previous_version(self) -> None:
        if self.schema is not None:
            self.execute("DELETE FROM stabilize_schema_version WHERE version > 3")
        else:
            self.execute("PRAGMA user_version = 3")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path / 'agent.db'}")
        return
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is not set: PostgreSQL tests need a server URL")
    import psycopg
    from psycopg import sql

    from stabilize.backends.postgres import PostgresBackend

    schema = f"t_{str(ULID()).lower()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield Database(url, schema)
    for key, backend in list(PostgresBackend._instances.items()):
        if key[1] == schema:
            backend.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


class PausingAgent(AgentLoopTask):
    """An agent whose next step is due in an hour: the loop rests after one step."""

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        return timedelta(hours=1)


def test_an_old_agent_checkpoint_is_migrated_and_the_loop_goes_on(database: Database) -> None:
    keys: list[str] = []

    @tool
    def ping(idempotency_key: str) -> str:
        """Ping."""
        keys.append(idempotency_key)
        return "pong"

    tools = ToolRegistry().add(ping)
    first_model = ScriptedModel([ToolCall("ping", {}), "done"])
    store, processor, orchestrator = database.engine(
        PausingAgent(client=first_model.client(), tools=tools)
    )
    wf = Workflow.create(
        "test",
        "agent",
        [
            StageExecution(
                ref_id="ag",
                type="agent",
                name="ag",
                context={"prompt": "Ping."},
                tasks=[TaskExecution.create("ag", "agent")],
            )
        ],
    )
    store.store(wf)
    orchestrator.start(wf)
    processor.process_all(timeout=30)  # one model call; the tool call is pending
    stage = store.retrieve(wf.id).stage_by_ref_id("ag")
    checkpoint = dict(stage.tasks[0].state)
    assert [i["status"] for i in checkpoint["invocations"]] == ["pending"]
    store.backend.close()

    # As an older stabilize stored it: the checkpoint in the context, marked with its run.
    [(body,)] = database.execute("SELECT body FROM stages WHERE id = ?", (stage.id,))
    row = json.loads(body)
    old = {k: v for k, v in row["tasks"][0].pop("state").items() if k != "kept"}
    row["context"]["_agent"] = {**old, "run_started": row["start_time"]}
    database.execute("UPDATE stages SET body = ? WHERE id = ?", (json.dumps(row), stage.id))
    database.execute("UPDATE queue_messages SET deliver_at = 0")  # the rest is over
    database.mark_previous_version()

    second_model = ScriptedModel([ToolCall("ping", {}), "done"])
    store, processor, _ = database.engine(AgentLoopTask(client=second_model.client(), tools=tools))
    [(migrated,)] = database.execute("SELECT body FROM stages WHERE id = ?", (stage.id,))
    stored = json.loads(migrated)
    assert "_agent" not in stored["context"]
    assert stored["tasks"][0]["state"] == {**old, "kept": {"step": old["step"]}}
    processor.process_all(timeout=30)

    done = store.retrieve(wf.id)
    assert done.status is S.SUCCEEDED
    agent_stage = done.stage_by_ref_id("ag")
    assert agent_stage.outputs["answer"] == "done"
    assert keys == [f"{wf.id}:{stage.id}:2"]  # the pending call, under the key it had
    assert len(first_model.requests) == 1
    assert len(second_model.requests) == 1  # the committed model call was not repeated
    assert agent_stage.tasks[0].state["kept"] == {"step": 3}
    store.backend.close()
