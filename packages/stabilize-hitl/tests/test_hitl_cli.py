"""What ``stabilize approve`` and ``reject`` tell the person at the shell (issue 15).

After a decision: that a running worker resumes the workflow, and whether one is busy on the
database. Refusals: one line, in the gate's terms (no "persistent signal"), exit 1; nothing
is changed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from stabilize import (
    ApprovalTask,
    Orchestrator,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowStatus,
)

S = WorkflowStatus


def cli(*args: str) -> subprocess.CompletedProcess[str]:
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
    assert lines[0].startswith(f"stabilize {command}: error: "), proc.stderr
    return lines[0]


class Gate:
    """A SQLite database holding one workflow: a first stage, then an approval gate."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        self.store = SqliteWorkflowStore(self.url, create_tables=True)
        self.queue = SqliteQueue(self.url)
        self.queue._create_table()
        registry = TaskRegistry()
        registry.register("work", lambda stage: TaskResult.success())
        registry.register("approval", ApprovalTask)
        self.processor = QueueProcessor(self.queue, store=self.store, task_registry=registry)
        self.orchestrator = Orchestrator(self.queue, store=self.store)
        self.workflow = Workflow.create(
            application="demo",
            name="gated",
            stages=[
                StageExecution(
                    ref_id="work",
                    type="work",
                    name="work",
                    tasks=[TaskExecution.create("w", "work", stage_start=True, stage_end=True)],
                ),
                StageExecution(
                    ref_id="gate",
                    type="approval",
                    name="gate",
                    requisite_stage_ref_ids={"work"},
                    tasks=[TaskExecution.create("g", "approval", stage_start=True, stage_end=True)],
                ),
            ],
        )
        self.store.store(self.workflow)

    def run(self) -> Workflow:
        self.processor.process_all(timeout=30)
        return self.store.retrieve(self.workflow.id)

    def start(self) -> None:
        self.orchestrator.start(self.workflow)

    def hold_a_lease(self, owner: str) -> None:
        """Leave a message leased to ``owner``, as a worker busy on this database does."""
        other = Workflow.create(application="demo", name="other", stages=[])
        self.store.store(other)
        self.orchestrator.start(other)
        now = int(time.time() * 1000)
        with self.queue.backend.transaction() as tx:
            assert tx.claim(owner, now, now + 3_600_000, 1)


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate(tmp_path / "gate.db")


def test_approve_says_a_running_worker_resumes_and_none_is_busy(gate: Gate) -> None:
    gate.start()
    gate.run()

    proc = cli("approve", gate.workflow.id, "gate", "--db-url", gate.url)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"approved stage gate of workflow {gate.workflow.id}",
        "A worker running on this database will resume the workflow (none is busy on it "
        "right now; an idle worker shows nothing, so start one if none runs).",
    ]
    assert gate.run().status is S.SUCCEEDED


def test_reject_says_how_many_workers_are_busy_on_the_database(gate: Gate) -> None:
    gate.start()
    gate.run()
    gate.hold_a_lease("worker-a")

    proc = cli("reject", gate.workflow.id, "gate", "--db-url", gate.url, "--note", "no")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == (
        "A worker running on this database will resume the workflow (1 worker is busy on it now)."
    )


def test_a_second_decision_is_refused_in_the_gate_terms(gate: Gate) -> None:
    gate.start()  # the gate's stage has not run yet: the first decision is kept for it

    first = cli("approve", gate.workflow.id, "gate", "--db-url", gate.url)
    second = cli("reject", gate.workflow.id, "gate", "--db-url", gate.url)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 1
    line = one_error_line(second, "reject")
    assert f"stage 'gate' of workflow {gate.workflow.id} is not waiting for a decision" in line
    assert "persistent" not in line
    assert gate.run().status is S.SUCCEEDED


def test_a_decided_gate_is_refused_saying_it_has_ended(gate: Gate) -> None:
    gate.start()
    gate.run()
    assert cli("approve", gate.workflow.id, "gate", "--db-url", gate.url).returncode == 0
    gate.run()

    proc = cli("reject", gate.workflow.id, "gate", "--db-url", gate.url)

    assert proc.returncode == 1
    assert "takes no more signals: the workflow has ended (SUCCEEDED)" in one_error_line(
        proc, "reject"
    )


@pytest.mark.parametrize(
    ("workflow", "stage", "says"),
    [
        ("wf_nope", "gate", "no workflow with id 'wf_nope'"),
        (None, "nope", "has no stage 'nope'"),
    ],
)
def test_an_unknown_workflow_or_stage_is_one_line(
    gate: Gate, workflow: str | None, stage: str, says: str
) -> None:
    gate.start()
    gate.run()
    before = gate.store.retrieve(gate.workflow.id).stage_by_ref_id("gate").status

    proc = cli("approve", workflow or gate.workflow.id, stage, "--db-url", gate.url)
    loud = cli("approve", workflow or gate.workflow.id, stage, "--db-url", gate.url, "-v")

    assert proc.returncode == 1
    assert says in one_error_line(proc, "approve")
    assert "Traceback" not in proc.stderr
    assert loud.returncode == 1
    assert loud.stderr.startswith("Traceback (most recent call last):")
    assert loud.stderr.splitlines()[-1] == proc.stderr.strip()
    assert gate.store.retrieve(gate.workflow.id).stage_by_ref_id("gate").status is before


@pytest.mark.parametrize(
    ("data", "says"),
    [("[1]", "--data must be a JSON object"), ("{", "--data is not JSON")],
)
def test_bad_data_is_a_usage_error(gate: Gate, data: str, says: str) -> None:
    proc = cli("approve", gate.workflow.id, "gate", "--db-url", gate.url, "--data", data)

    assert proc.returncode == 2
    assert says in one_error_line(proc, "approve")
