"""Migration 0004: stored rows of the old form (engine keys in the context) are converted.

A workflow is run to a point where every kind of engine bookkeeping is live: a while loop
mid-iteration, a wait with its deadline, a fan-out with one instance done, a signal
delivered and not yet acted on. Its stage rows are then rewritten in the form earlier
versions stored (raw SQL) and the database is marked as schema version 3. Opening it (or
``stabilize mg-up``) must convert the rows, and the workflow must then finish as it would
have.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from stabilize import (
    MultiInstanceConfig,
    StageExecution,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize.backends.sqlite import sqlite_path
from stabilize.loops import while_loop
from stabilize.models._legacy import LEGACY_KEYS

if TYPE_CHECKING:
    from conftest import Database

S = WorkflowStatus
PREVIOUS_VERSION = 3
PAST = 1_000_000_000.0
"""A wait deadline that has passed (epoch seconds)."""


def stage(ref: str, task: str, requires: set[str] | None = None, **fields: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, task)],
        **fields,
    )


def build() -> Workflow:
    loop = while_loop("w", [stage("count", "count"), stage("gate", "gate", {"count"})], "n < 3", 5)
    return Workflow.create(
        "tests",
        "migration",
        [
            *loop,
            stage("wait", "wait", context={"waitTime": 3600}),
            stage(
                "fan",
                "wait_for_signal",
                context={"items": [1, 2]},
                mi_config=MultiInstanceConfig(items_key="items", max_concurrency=1),
            ),
            stage("end", "noop", {"w_done", "wait", "fan"}),
        ],
        context={"n": 0},
    )


# -- raw access to the database, as an older stabilize would have left it -------------------


@contextmanager
def raw(db: Database) -> Iterator[Any]:
    """A DB-API connection to ``db`` that is not stabilize's (autocommit)."""
    if db.is_postgres:
        import psycopg

        with psycopg.connect(db.url, autocommit=True, options=f"-csearch_path={db.schema}") as pg:
            yield pg
        return
    lite = sqlite3.connect(sqlite_path(db.url), isolation_level=None)
    try:
        yield lite
    finally:
        lite.close()


def placeholder(db: Database) -> str:
    return "%s" if db.is_postgres else "?"


def stored_rows(db: Database) -> dict[str, dict[str, Any]]:
    with raw(db) as conn:
        rows = conn.execute("SELECT body FROM stages").fetchall()
    found = [json.loads(body) for (body,) in rows]
    return {row["ref_id"]: row for row in found}


def old_form(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as versions before 0004 stored it: the engine's keys in the context."""
    row = json.loads(json.dumps(row))
    context = row["context"]
    jumps = row.pop("jump_count", 0)
    if jumps:
        context["_jump_count"] = jumps
    for field in ("signal_user", "mi_generation", "mi_index"):
        if field in row:
            context[f"_{field}"] = row.pop(field)
    if "_signal_name" in context:
        context.setdefault("_signal_user", None)  # delivery always wrote it
    loop = row.pop("loop", None)
    if loop is not None:
        for key, value in loop.items():
            context[f"_loop_{key}"] = value
    for task in row["tasks"]:
        state = task.pop("state", {})
        if "until" in state:
            context["_wait_until"] = state["until"]
        kept = state.get("kept") or {}
        if "iteration" in kept:
            context["_loop_iteration"] = kept["iteration"]
        if "carry" in kept:
            context["_loop_carry"] = kept["carry"]
    return row


def downgrade(db: Database) -> None:
    """Rewrite every stage row in the old form and mark the database as version 3."""
    mark = placeholder(db)
    with raw(db) as conn:
        for ref, row in stored_rows(db).items():
            old = old_form(row)
            if ref == "wait":  # its deadline passed while the worker was away
                old["context"]["_wait_until"] = PAST
                conn.execute(
                    f"UPDATE queue_messages SET deliver_at = 0 WHERE stage_id = {mark}",
                    (row["id"],),
                )
            if ref == "fan[1]":  # a suspension's timer, as tasks used to ask for one
                old["context"]["_signal_timeout_seconds"] = 30
            conn.execute(
                f"UPDATE stages SET body = {mark} WHERE id = {mark}", (json.dumps(old), row["id"])
            )
        if db.is_postgres:
            conn.execute(f"DELETE FROM stabilize_schema_version WHERE version > {PREVIOUS_VERSION}")
        else:
            conn.execute(f"PRAGMA user_version = {PREVIOUS_VERSION}")


def schema_version(db: Database) -> int:
    with raw(db) as conn:
        if db.is_postgres:
            row = conn.execute("SELECT max(version) FROM stabilize_schema_version").fetchone()
        else:
            row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def mg_up(db: Database) -> str:
    args = [sys.executable, "-m", "stabilize", "mg-up", "--db-url", db.url]
    if db.schema is not None:
        args += ["--schema", db.schema]
    env = {k: v for k, v in os.environ.items() if k != "STABILIZE_DISABLE_PLUGIN_AUTOLOAD"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False, timeout=50)
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the test -------------------------------------------------------------------------------


def register(engine: Any, heard: list[tuple[str, Any, Any]]) -> None:
    def count(s: StageExecution) -> dict[str, Any]:
        return {"n": int(s.context["n"]) + 1}

    def gate(s: StageExecution) -> Any:
        name = s.context.get("_signal_name")
        if name is None:
            return TaskResult.suspend()
        heard.append((name, s.signal_user, s.context.get("_signal_data")))
        return {"heard": name}

    engine.registry.register("count", count)
    engine.registry.register("gate", gate)


def instance_of(engine: Any, wf: Workflow, index: int) -> StageExecution:
    stored: Workflow = engine.store.retrieve(wf.id)
    return stored.stage_by_ref_id(f"fan[{index}]")


@pytest.mark.parametrize("how", ["open", "mg-up"])
def test_old_rows_are_converted_and_the_workflow_finishes(make_engine, backend, how):
    heard: list[tuple[str, Any, Any]] = []
    first = make_engine()
    register(first, heard)
    wf = build()
    first.store.store(wf)
    first.orchestrator.start(wf)
    first.processor.process_all(timeout=30)
    first.orchestrator.signal(wf.id, "gate", "go", {"round": 1}, user="bob")
    first.orchestrator.signal(wf.id, instance_of(first, wf, 0).id, "a0", user="x")
    first.processor.process_all(timeout=30)
    # Delivered but not acted on: the gate's task is queued to run with it.
    first.orchestrator.signal(wf.id, "gate", "go", {"round": 2}, user="alice")
    before = first.store.retrieve(wf.id)
    assert before.stage_by_ref_id("gate").status is S.RUNNING
    assert before.stage_by_ref_id("w").tasks[0].state["kept"]["iteration"] == 2
    assert before.stage_by_ref_id("w_next").jump_count == 1
    assert instance_of(first, wf, 1).status is S.SUSPENDED
    first.backend.close()

    downgrade(backend)
    old = stored_rows(backend)
    assert old["w"]["context"]["_loop_iteration"] == 2
    assert old["gate"]["context"]["_signal_user"] == "alice"
    assert schema_version(backend) == PREVIOUS_VERSION

    if how == "mg-up":
        out = mg_up(backend)
        assert f"applied: {PREVIOUS_VERSION + 1:04d}" in out
        assert schema_version(backend) == PREVIOUS_VERSION + 1
    second = make_engine()  # opening the database migrates it (after mg-up: nothing to do)
    register(second, heard)
    assert schema_version(backend) == PREVIOUS_VERSION + 1

    rows = stored_rows(backend)
    for ref, row in rows.items():
        assert not LEGACY_KEYS & set(row["context"]), (ref, row["context"])
    assert rows["w"]["loop"] == {
        "mode": "while",
        "condition": "n < 3",
        "max_iterations": 5,
        "target": "w_done",
        "fail_when_exhausted": False,
    }
    assert rows["w"]["tasks"][0]["state"]["kept"]["iteration"] == 2
    assert rows["w"]["tasks"][0]["state"]["kept"]["carry"]["n"] == 1
    assert rows["w_next"]["jump_count"] == 1
    assert rows["w_next"]["loop"]["mode"] == "next"
    assert rows["gate"]["signal_user"] == "alice"
    assert rows["gate"]["context"]["_signal_name"] == "go"  # documented: it stays
    assert rows["wait"]["tasks"][0]["state"] == {"until": PAST}
    assert rows["fan"]["mi_generation"] is not None
    assert [rows[f"fan[{i}]"]["mi_index"] for i in (0, 1)] == [0, 1]

    second.processor.process_all(timeout=30)
    second.orchestrator.signal(wf.id, "gate", "go", {"round": 3}, user="carol")
    second.orchestrator.signal(wf.id, instance_of(second, wf, 1).id, "a1", user="y")
    second.processor.process_all(timeout=30)

    final = second.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED, final.error
    assert heard == [
        ("go", "bob", {"round": 1}),
        ("go", "alice", {"round": 2}),
        ("go", "carol", {"round": 3}),
    ]
    guard = final.stage_by_ref_id("w")
    assert guard.outputs["w_iterations"] == 3
    assert guard.outputs["w_condition_met"] is True
    assert final.stage_by_ref_id("w_next").jump_count == 3
    assert final.stage_by_ref_id("wait").status is S.SUCCEEDED  # the stored deadline held
    signals = [i["signal"] for i in final.stage_by_ref_id("fan").outputs["instances"]]
    assert signals == ["a0", "a1"]
