"""Approval gates and signals, end to end on real SQLite files."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from ulid import ULID

from stabilize import (
    ApprovalTask,
    Orchestrator,
    QueueProcessor,
    SignalError,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowStatus,
    approve,
    reject,
)
from stabilize.events import SqliteEventStore, configure_event_sourcing
from stabilize.hitl import get_signal, send_signal

S = WorkflowStatus


@dataclass
class Engine:
    url: str
    store: SqliteWorkflowStore
    queue: SqliteQueue
    processor: QueueProcessor
    orchestrator: Orchestrator


def make_engine(url: str) -> Engine:
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()
    registry = TaskRegistry()
    registry.register("agent", lambda stage: TaskResult.success(outputs={"balance": 42}))
    registry.register("approval", ApprovalTask)
    processor = QueueProcessor(queue, store=store, task_registry=registry)
    return Engine(url, store, queue, processor, Orchestrator(queue, store=store))


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'hitl.db'}")


@pytest.fixture(autouse=True)
def no_event_sourcing() -> object:
    yield None
    configure_event_sourcing()


def gated(**gate_context: object) -> Workflow:
    return Workflow.create(
        application="demo",
        name="Agent with approval",
        stages=[
            StageExecution(
                ref_id="agent",
                type="agent",
                name="Look up balance",
                tasks=[TaskExecution.create("a", "agent", stage_start=True, stage_end=True)],
            ),
            StageExecution(
                ref_id="approve",
                type="approval",
                name="Human sign-off",
                requisite_stage_ref_ids={"agent"},
                context=dict(gate_context),
                tasks=[TaskExecution.create("ap", "approval", stage_start=True, stage_end=True)],
            ),
        ],
    )


def run_to_gate(engine: Engine, wf: Workflow) -> StageExecution:
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)
    return engine.store.retrieve(wf.id).stage_by_ref_id("approve")


def test_spec_example_suspends_then_approve_finishes(engine: Engine) -> None:
    workflow = gated()
    gate = run_to_gate(engine, workflow)
    assert gate.status == WorkflowStatus.SUSPENDED

    approve(engine.queue, workflow.id, gate.id, {"user": "alice"})
    engine.processor.process_all(timeout=30)

    result = engine.store.retrieve(workflow.id)
    assert result.status is S.SUCCEEDED
    outputs = result.stage_by_ref_id("approve").outputs
    assert outputs == {"approved": True, "approval": {"user": "alice"}, "approved_by": "alice"}


def test_reject_fails_the_workflow_with_the_reason(engine: Engine) -> None:
    wf = gated()
    gate = run_to_gate(engine, wf)
    reject(engine.queue, wf.id, gate.id, user="bob", note="numbers look wrong")
    engine.processor.process_all(timeout=30)
    result = engine.store.retrieve(wf.id)
    assert result.status is S.TERMINAL
    assert result.error == "stage 'approve' was rejected by bob: numbers look wrong"
    assert result.stage_by_ref_id("approve").outputs["rejected_by"] == "bob"


def test_reject_can_let_the_workflow_continue(engine: Engine) -> None:
    wf = gated(approval_reject_continues=True)
    gate = run_to_gate(engine, wf)
    reject(engine.queue, wf.id, "approve", user="bob")
    engine.processor.process_all(timeout=30)
    result = engine.store.retrieve(wf.id)
    assert result.status is S.SUCCEEDED
    assert result.stage_by_ref_id("approve").status is S.FAILED_CONTINUE
    assert gate.id == result.stage_by_ref_id("approve").id


def test_approving_twice_is_refused_and_resumes_nothing_twice(engine: Engine) -> None:
    wf = gated()
    gate = run_to_gate(engine, wf)
    approve(engine.queue, wf.id, gate.id, user="alice")
    with pytest.raises(SignalError, match="not waiting"):
        approve(engine.queue, wf.id, gate.id, user="mallory")
    engine.processor.process_all(timeout=30)
    with pytest.raises(SignalError, match="takes no more signals"):
        approve(engine.queue, wf.id, gate.id, user="mallory")
    assert engine.store.retrieve(wf.id).stage_by_ref_id("approve").outputs["approved_by"] == "alice"


def test_an_approval_sent_before_the_workflow_starts_is_kept_until_the_gate_waits(
    engine: Engine,
) -> None:
    # Issue 14: a quick approver used to get "not waiting yet" and lose the decision.
    wf = gated()
    engine.store.store(wf)
    approve(engine.queue, wf.id, "approve", {"user": "alice"})
    assert [
        s["name"] for s in engine.store.retrieve(wf.id).stage_by_ref_id("approve").pending_signals
    ] == ["approve"]
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)
    result = engine.store.retrieve(wf.id)
    assert result.status is S.SUCCEEDED
    assert result.stage_by_ref_id("approve").outputs["approved_by"] == "alice"


def test_a_rejection_sent_while_the_upstream_runs_is_delivered_when_the_gate_waits(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'early.db'}")
    wf = gated()
    seen: list[S] = []

    def agent(stage: StageExecution) -> TaskResult:
        # The upstream is RUNNING and the gate NOT_STARTED while the decision arrives.
        reject(engine.queue, wf.id, "approve", user="bob", note="too late anyway")
        seen.append(engine.store.retrieve(wf.id).stage_by_ref_id("agent").status)
        return TaskResult.success()

    registry = TaskRegistry()
    registry.register("agent", agent)
    registry.register("approval", ApprovalTask)
    processor = QueueProcessor(engine.queue, store=engine.store, task_registry=registry)
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    processor.process_all(timeout=30)
    result = engine.store.retrieve(wf.id)
    assert seen == [S.RUNNING]
    assert result.status is S.TERMINAL
    assert result.stage_by_ref_id("approve").outputs["rejected_by"] == "bob"


def test_a_second_early_decision_is_refused_and_the_first_one_stands(engine: Engine) -> None:
    wf = gated()
    engine.store.store(wf)
    approve(engine.queue, wf.id, "approve", user="alice")
    with pytest.raises(SignalError, match=r"has one already \(approve\)"):
        reject(engine.queue, wf.id, "approve", user="mallory")
    gate = engine.store.retrieve(wf.id).stage_by_ref_id("approve")
    assert [s["user"] for s in gate.pending_signals] == ["alice"]
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)
    result = engine.store.retrieve(wf.id)
    assert result.status is S.SUCCEEDED
    assert result.stage_by_ref_id("approve").outputs["approved_by"] == "alice"


def test_approving_a_stage_of_another_workflow_is_refused(engine: Engine) -> None:
    first, second = gated(), gated()
    gate = run_to_gate(engine, first)
    run_to_gate(engine, second)
    with pytest.raises(SignalError, match="has no stage"):
        approve(engine.queue, second.id, gate.id, user="alice")
    assert engine.store.retrieve(second.id).stage_by_ref_id("approve").status is S.SUSPENDED


def test_a_signal_sent_before_the_gate_suspends_is_kept_and_delivered(engine: Engine) -> None:
    wf = gated()
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    send_signal(engine.queue, wf.id, "approve", "approve", {"ticket": 7}, user="carol")
    engine.processor.process_all(timeout=30)
    result = engine.store.retrieve(wf.id)
    assert result.status is S.SUCCEEDED
    assert result.stage_by_ref_id("approve").outputs["approval"] == {"ticket": 7}


def test_the_wait_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    first = make_engine(url)
    wf = gated()
    gate = run_to_gate(first, wf)
    del first
    gc.collect()  # the process forgets every object of the first engine
    second = make_engine(url)
    assert second.store.retrieve(wf.id).stage_by_ref_id("approve").status is S.SUSPENDED
    approve(second.queue, wf.id, gate.id, user="alice")
    second.processor.process_all(timeout=30)
    assert second.store.retrieve(wf.id).status is S.SUCCEEDED


@pytest.mark.parametrize(
    ("action", "status", "approved"),
    [("approve", S.SUCCEEDED, True), ("reject", S.TERMINAL, False)],
)
def test_timeout_decides_by_default(
    engine: Engine, action: str, status: WorkflowStatus, approved: bool
) -> None:
    wf = gated(approval_timeout_seconds=0.2, approval_timeout_action=action)
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)  # waits for the durable timer too
    result = engine.store.retrieve(wf.id)
    assert result.status is status
    outputs = result.stage_by_ref_id("approve").outputs
    assert outputs["approved"] is approved
    assert outputs["approval_timed_out"] is True


def test_timeout_escalates_then_waits_for_a_person(engine: Engine) -> None:
    wf = gated(approval_timeout_seconds=0.2, approval_timeout_action="escalate")
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)
    gate = engine.store.retrieve(wf.id).stage_by_ref_id("approve")
    assert gate.status is S.SUSPENDED
    assert gate.context["escalated"] is True
    approve(engine.queue, wf.id, gate.id, user="manager")
    engine.processor.process_all(timeout=30)
    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED


def test_a_decision_that_comes_first_cancels_the_timer(engine: Engine) -> None:
    wf = gated(approval_timeout_seconds=3600, approval_timeout_action="reject")
    gate = run_to_gate(engine, wf)
    approve(engine.queue, wf.id, gate.id, user="alice")
    engine.processor.process_all(timeout=30)
    result = engine.store.retrieve(wf.id)
    assert result.status is S.SUCCEEDED
    assert "approval_timed_out" not in result.stage_by_ref_id("approve").outputs


def test_the_approver_and_note_are_in_the_event_log(engine: Engine, tmp_path: Path) -> None:
    events = SqliteEventStore(engine.url, create_tables=True)
    configure_event_sourcing(events)
    wf = gated()
    gate = run_to_gate(engine, wf)
    approve(engine.queue, wf.id, gate.id, user="alice", note="looks right")
    engine.processor.process_all(timeout=30)
    resumed = [e for e in events.get_events(wf.id) if e.event_type == "stage.resumed"]
    assert [(e.data["signal"], e.data["user"], e.data["data"]) for e in resumed] == [
        ("approve", "alice", {"note": "looks right"})
    ]


def test_get_signal_reads_the_signal_a_task_was_resumed_with() -> None:
    stage = StageExecution(ref_id="g", context={"_signal_name": "go", "_signal_data": {"x": 1}})
    assert get_signal(stage) == ("go", {"x": 1})
    assert get_signal(StageExecution(ref_id="h")) == (None, {})


def test_cli_approve_and_reject(engine: Engine) -> None:
    wf = gated()
    run_to_gate(engine, wf)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stabilize", *args, "--db-url", engine.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = cli("approve", wf.id, "approve", "--user", "dana", "--data", json.dumps({"k": 1}))
    assert done.returncode == 0, done.stderr
    again = cli("reject", wf.id, "approve", "--user", "eve")
    assert again.returncode == 1
    assert "not waiting" in again.stderr
    bad = cli("approve", wf.id, "approve", "--data", "[1]")
    assert bad.returncode == 2
    engine.processor.process_all(timeout=30)
    outputs = engine.store.retrieve(wf.id).stage_by_ref_id("approve").outputs
    assert outputs["approved_by"] == "dana"
    assert outputs["approval"] == {"k": 1}


# -- the CLI opens a database, never creates one (issue 13) ---------------------------------


def stabilize_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stabilize", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"stabilize {command}: error: ")
    return lines[0]


@pytest.mark.parametrize("command", ["approve", "reject"])
def test_cli_refuses_a_missing_file_and_creates_nothing(tmp_path: Path, command: str) -> None:
    path = tmp_path / "typo.db"

    proc = stabilize_cli(command, "wf_1", "gate", "--db-url", f"sqlite:///{path}")

    assert proc.returncode == 1
    assert f"no stabilize database at {path}" in one_error_line(proc, command)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["approve", "reject"])
def test_cli_refuses_a_url_that_is_no_database_url(tmp_path: Path, command: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stabilize", command, "wf_1", "gate", "--db-url", "garbage"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )

    assert proc.returncode == 2
    line = one_error_line(proc, command)
    assert "not a database URL: 'garbage'" in line
    assert "postgresql://" in line
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_newer_file_and_leaves_it(tmp_path: Path) -> None:
    path = tmp_path / "wf.db"
    up = stabilize_cli("mg-up", "--db-url", f"sqlite:///{path}")
    assert up.returncode == 0, up.stderr
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = path.read_bytes()

    proc = stabilize_cli("approve", "wf_1", "gate", "--db-url", f"sqlite:///{path}")

    assert proc.returncode == 1
    assert "schema version 999" in one_error_line(proc, "approve")
    assert path.read_bytes() == before


@pytest.mark.postgres
def test_cli_refuses_a_missing_postgres_schema_and_creates_nothing() -> None:
    url = os.environ.get("STABILIZE_TEST_PG_URL")
    if not url:
        pytest.skip("STABILIZE_TEST_PG_URL is not set: PostgreSQL tests need a server URL")
    import psycopg

    schema = f"t_{str(ULID()).lower()}"

    proc = stabilize_cli("approve", "wf_1", "gate", "--db-url", url, "--schema", schema)

    assert proc.returncode == 1
    assert f"schema {schema} does not exist" in one_error_line(proc, "approve")
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None


def test_cli_names_a_postgres_server_that_is_down() -> None:
    pytest.importorskip("psycopg")

    proc = stabilize_cli("reject", "wf_1", "gate", "--db-url", "postgresql://root@127.0.0.1:1/x")

    assert proc.returncode == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in one_error_line(proc, "reject")
