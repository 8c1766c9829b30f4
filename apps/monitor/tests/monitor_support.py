"""What the monitor's tests share (not a test): a fixed source, workflows, an engine."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stabilize import (
    Orchestrator,
    QueueProcessor,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize.hitl import ApprovalTask
from stabilize.models.event import Event
from stabilize.persistence.overview import QueueStats
from stabilize_monitor import DatabaseSource, Filters, WorkflowRow

PG_URL_ENV = "STABILIZE_TEST_PG_URL"
FIXED_NOW = 1_800_000_000.0
"""The fixed clock of frame tests: 2027-01-15 08:00:00 UTC."""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds; the deadline only guards against hangs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class Engine:
    """A real database with a worker processing it in this process."""

    url: str
    schema: str | None
    source: DatabaseSource
    processor: QueueProcessor
    orchestrator: Orchestrator

    def start(self, workflow: Workflow) -> Workflow:
        self.orchestrator.start(workflow)
        return workflow

    def status(self, workflow_id: str) -> str:
        return self.source.store.retrieve(workflow_id).status.value

    def stage_status(self, workflow_id: str, ref_id: str) -> str:
        return self.source.store.retrieve(workflow_id).stage_by_ref_id(ref_id).status.value


FLAKY_RUNS: Counter[str] = Counter()
"""Runs of each ``flaky`` stage (by stage id): its first run fails, later ones succeed."""


def flaky(stage: StageExecution) -> TaskResult:
    FLAKY_RUNS[stage.id] += 1
    if FLAKY_RUNS[stage.id] == 1:
        return TaskResult.terminal("the first run fails")
    return TaskResult.success(outputs={"runs": FLAKY_RUNS[stage.id]})


def registry() -> TaskRegistry:
    registry = TaskRegistry()
    registry.register("work", lambda stage: TaskResult.success(outputs={"done": stage.ref_id}))
    registry.register("flaky", flaky)
    registry.register("approval", ApprovalTask)
    return registry


def work_stage(ref_id: str, *after: str, **fields: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref_id,
        type="work",
        name=f"Work {ref_id}",
        requisite_stage_ref_ids=set(after),
        tasks=[TaskExecution.create(ref_id, "work", stage_start=True, stage_end=True)],
        **fields,
    )


def gated_workflow(application: str = "billing", name: str = "Invoice run") -> Workflow:
    """fetch -> approve (an approval gate) -> send."""
    return Workflow.create(
        application=application,
        name=name,
        stages=[
            work_stage("fetch"),
            StageExecution(
                ref_id="approve",
                type="approval",
                name="Sign-off",
                requisite_stage_ref_ids={"fetch"},
                tasks=[TaskExecution.create("ap", "approval", stage_start=True, stage_end=True)],
            ),
            work_stage("send", "approve"),
        ],
    )


def plain_workflow(application: str = "reports", name: str = "Nightly report") -> Workflow:
    return Workflow.create(
        application=application,
        name=name,
        stages=[work_stage("a"), work_stage("b", "a"), work_stage("c", "a")],
    )


def flaky_workflow(application: str = "reports", name: str = "Flaky export") -> Workflow:
    """a -> b, whose task fails its first run -> c."""
    b = work_stage("b", "a")
    b.type = "flaky"
    b.tasks = [TaskExecution.create("b", "flaky", stage_start=True, stage_end=True)]
    return Workflow.create(
        application=application, name=name, stages=[work_stage("a"), b, work_stage("c", "b")]
    )


@dataclass
class FakeSource:
    """A source with fixed data, for frames and for the app's own logic."""

    rows: list[WorkflowRow] = field(default_factory=list)
    stats: QueueStats = field(default_factory=QueueStats)
    workflows_by_id: dict[str, Workflow] = field(default_factory=dict)
    event_log: dict[str, list[Event]] = field(default_factory=dict)
    history: dict[tuple[str, int], Workflow] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    reads: int = 0
    location: str = "/data/stabilize.db"

    def workflows(self, filters: Filters, limit: int, now: float) -> list[WorkflowRow]:
        self.reads += 1
        found = [
            r
            for r in self.rows
            if (filters.application is None or r.application == filters.application)
            and filters.search.lower() in r.name.lower()
            and (filters.status in ("all", "recent") or _matches(filters.status, r.status))
        ]
        return found[:limit]

    def counts(self, application: str | None) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            if application is None or r.application == application:
                out[r.status] = out.get(r.status, 0) + 1
        return out

    def applications(self) -> list[str]:
        return sorted({r.application for r in self.rows})

    def queue_stats(self, now: float) -> QueueStats:
        return self.stats

    def marker(self) -> Any:
        return (len(self.rows), tuple(r.status for r in self.rows))

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        return lambda: None

    def workflow(self, workflow_id: str) -> Workflow:
        return self.workflows_by_id[workflow_id]

    def events(self, workflow_id: str, since: int = 0) -> list[Event]:
        return [e for e in self.event_log.get(workflow_id, []) if e.sequence > since]

    def state_at(self, workflow_id: str, sequence: int) -> Workflow:
        return self.history[(workflow_id, sequence)]

    def approve(self, workflow_id: str, stage: str, user: str, note: str) -> None:
        self.calls.append(("approve", workflow_id, stage, user, note))

    def reject(self, workflow_id: str, stage: str, user: str, note: str) -> None:
        self.calls.append(("reject", workflow_id, stage, user, note))

    def signal(
        self, workflow_id: str, stage: str, name: str, data: dict[str, Any], user: str
    ) -> None:
        self.calls.append(("signal", workflow_id, stage, name, data, user))

    def cancel(self, workflow_id: str, user: str, reason: str) -> None:
        self.calls.append(("cancel", workflow_id, user, reason))

    def cancel_stage(self, workflow_id: str, stage: str, user: str, reason: str) -> None:
        self.calls.append(("cancel_stage", workflow_id, stage, user, reason))

    def restart(self, workflow_id: str, stage: str, user: str) -> None:
        self.calls.append(("restart", workflow_id, stage, user))

    def pause(self, workflow_id: str) -> None:
        self.calls.append(("pause", workflow_id))

    def resume(self, workflow_id: str) -> None:
        self.calls.append(("resume", workflow_id))

    def close(self) -> None:
        pass


def _matches(status_filter: str, status: str) -> bool:
    from stabilize_monitor import STATUS_FILTERS

    wanted = STATUS_FILTERS[status_filter]
    return wanted is None or status in {s.value for s in wanted}


def row(
    workflow_id: str,
    name: str,
    status: str,
    *,
    application: str = "billing",
    done: int = 1,
    total: int = 3,
    current: tuple[str, ...] = (),
) -> WorkflowRow:
    start = int(FIXED_NOW * 1000) - 125_000
    return WorkflowRow(
        id=workflow_id,
        application=application,
        name=name,
        status=status,
        created_at=start,
        updated_at=start,
        start_time=start,
        end_time=None if status in ("RUNNING", "SUSPENDED") else start + 65_000,
        stages_done=done,
        stages_total=total,
        current_stages=current,
    )


def drop_schema(url: str, schema: str) -> None:
    """Close this process's backends on ``schema``, then drop it with everything in it."""
    import psycopg
    from psycopg import sql

    from stabilize.backends.postgres import PostgresBackend

    for key, backend in list(PostgresBackend._instances.items()):
        if key[1] == schema:
            backend.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def detail_workflow(fake_source: FakeSource) -> FakeSource:
    """Give workflow wf_2 five stages (an N_OF_M join of three), three events, a past."""
    fan_in = StageExecution(
        ref_id="merge",
        type="work",
        name="Merge",
        requisite_stage_ref_ids={"b", "c", "d"},
        join_type="N_OF_M",  # type: ignore[arg-type]
        join_threshold=2,
    )
    stages = [
        StageExecution(ref_id="a", type="work", status=WorkflowStatus.SUCCEEDED),
        StageExecution(
            ref_id="b",
            type="work",
            requisite_stage_ref_ids={"a"},
            status=WorkflowStatus.SUCCEEDED,
            outputs={"rows": 12},
        ),
        StageExecution(
            ref_id="c",
            type="work",
            requisite_stage_ref_ids={"a"},
            status=WorkflowStatus.RUNNING,
            context={"city": "Oslo"},
            tasks=[TaskExecution.create("c", "work", stage_start=True, stage_end=True)],
        ),
        StageExecution(
            ref_id="d", type="work", requisite_stage_ref_ids={"a"}, status=WorkflowStatus.RUNNING
        ),
        fan_in,
    ]
    wf = Workflow(id="wf_2", application="reports", name="Nightly report", stages=stages)
    wf.status = WorkflowStatus.RUNNING
    fake_source.workflows_by_id["wf_2"] = wf
    c_id = stages[2].id
    fake_source.event_log["wf_2"] = [
        Event("wf_2", 1, "workflow.created", "workflow", "wf_2", 0, {}),
        Event("wf_2", 2, "stage.started", "stage", c_id, 0, {"ref_id": "c"}),
        Event("wf_2", 3, "custom.progress", "stage", c_id, 0, {"message": "half way"}),
    ]
    earlier = Workflow(
        id="wf_2",
        application="reports",
        name="Nightly report",
        stages=[
            StageExecution(ref_id="a", type="work", status=WorkflowStatus.RUNNING),
        ],
    )
    fake_source.history[("wf_2", 2)] = earlier
    return fake_source
