"""The invariants checked after each simulated run.

- every workflow ended, and nothing is left in the queue or the dead letters;
- event sequence numbers of each workflow run 1..n, no gap, no duplicate;
- replaying the log rebuilds exactly the stored state;
- each run of a task (task id, run, retry) has at most one committed result, and a
  successful result comes from an execution of that run;
- a task handed to user code was RUNNING in that run in the database (so a task whose
  result was committed never runs again);
- executions of one run share one idempotency key, the one the engine documents;
- joins: a stage started only when its join rule held at that point of the log;
- without a failing task, a deadline or a cancellation, a workflow succeeds.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from simulation.sim_workflows import Plan
from simulation.sim_world import World

from stabilize import StageExecution, Workflow
from stabilize.events import EventReplayer
from stabilize.events.diff import apply
from stabilize.models.status import WorkflowStatus

S = WorkflowStatus
RESULT_EVENTS = frozenset({"task.completed", "task.failed", "task.retried", "task.suspended"})
SUCCEEDED_EDGE = frozenset({S.SUCCEEDED.value, S.FAILED_CONTINUE.value})
COMPLETE = frozenset(s.value for s in S if s.is_complete)
STAGE_ENDS = {
    "stage.completed": S.SUCCEEDED.value,
    "stage.failed": S.TERMINAL.value,
    "stage.skipped": S.SKIPPED.value,
    "stage.canceled": S.CANCELED.value,
}
"""Events that end a stage, and the status to assume when the event does not carry one."""

RunKey = tuple[str, int, int]
"""(task id, run, retry): one execution of a task's user code that may commit a result."""


def comparable(wf: Workflow) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return wf.to_dict(), sorted((s.to_dict() for s in wf.stages), key=lambda d: d["id"])


def check_run(world: World) -> list[str]:
    """Every invariant of one finished run; returns what failed (empty: all held)."""
    problems = list(world.violations)
    with world.real.read() as tx:
        tx.cur.execute("SELECT kind, workflow_id, deliver_at, lease_owner FROM queue_messages")
        left = tx.cur.fetchall()
        tx.cur.execute("SELECT kind, workflow_id, reason FROM dead_letters")
        dead = tx.cur.fetchall()
    if left:
        problems.append(f"messages left in the queue: {left}")
    if dead:
        problems.append(f"dead letters: {dead}")
    for execution in world.executions:
        expected = ":".join(
            [execution.workflow_id, execution.stage_id, execution.task_id, str(execution.retry)]
        )
        if execution.key != expected:
            problems.append(f"idempotency key {execution.key!r}, expected {expected!r}")
    executed = {(e.workflow_id, e.task_id, e.run, e.retry) for e in world.executions}
    plans = {plan.workflow.id: plan for plan in world.plans}
    with world.real.read() as tx:
        tx.cur.execute("SELECT id FROM workflows ORDER BY id")
        stored_ids = [row[0] for row in tx.cur.fetchall()]
    for wf_id in stored_ids:  # the generated workflows and the sub-workflows they started
        problems.extend(check_workflow(world, wf_id, plans.get(wf_id), executed))
    return problems


def check_workflow(
    world: World, wf_id: str, plan: Plan | None, executed: set[tuple[str, str, int, int]]
) -> list[str]:
    stored = world.stored(wf_id)
    problems = []
    if not stored.status.is_complete:
        problems.append(f"{wf_id} did not end: {stored.status.value}")
    canceled = wf_id in world.canceled
    if plan is None:
        pass  # a sub-workflow: its parent's plan says whether it may fail
    elif not (plan.may_fail or canceled) and stored.status is not S.SUCCEEDED:
        problems.append(
            f"{wf_id} ended {stored.status.value} though nothing in it can fail: {stored.error}"
        )
    events = world.events.get_events(wf_id)
    sequences = [e.sequence for e in events]
    if sequences != list(range(1, len(sequences) + 1)):
        problems.append(f"{wf_id}: event sequences are not 1..n: {sequences}")
    if events[0].event_type != "workflow.created":
        problems.append(f"{wf_id}: the log starts with {events[0].event_type}")
        return problems
    rebuilt = EventReplayer(world.events).rebuild_workflow_state(wf_id)
    if comparable(rebuilt) != comparable(stored):
        problems.append(f"{wf_id}: replaying the log does not give the stored state")
    workflow: dict[str, Any] = {}
    stages: dict[str, dict[str, Any]] = {}
    before: dict[str, dict[str, Any]] = {}
    live: dict[str, str] = {}
    results: Counter[RunKey] = Counter()
    starts: Counter[str] = Counter()
    deadline = False
    jumped_to: set[str] = set()
    merge_credit: Counter[str] = Counter()
    merge_starts: Counter[str] = Counter()
    for event in events:
        kind, data = event.event_type, event.data
        if kind == "jump.executed":
            # A jump starts its target whatever the target's join says (a loop may even
            # revive a stage a quorum join withdrew).
            jumped_to.add(str(data.get("target")))
        if kind == "workflow.created":
            workflow = dict(data["workflow"])
            stages = {s["id"]: dict(s) for s in data["stages"]}
        elif kind == "state.changed":
            before = dict(stages)
            # Statuses as the transition goes: the state before it, then its lifecycle events
            # (a multi-merge stage may complete and restart within one transition).
            live = {i: str(row.get("status", "NOT_STARTED")) for i, row in before.items()}
            deadline = False
            jumped_to = set()
            if "workflow" in data:
                workflow = apply(workflow, data["workflow"])
            for stage_id, change in data.get("stages", {}).items():
                stages[stage_id] = apply(stages.get(stage_id, {}), change)
            for added in data.get("added", []):
                stages[added["id"]] = dict(added)
        elif kind == "stage.deadline":
            deadline = True
        elif kind in RESULT_EVENTS or (kind == "jump.executed" and not deadline):
            key = _run_key(before, event.entity_id, kind)
            if key is None:
                problems.append(f"{wf_id} seq {event.sequence}: {kind} for no running task")
                continue
            results[key] += 1
            if results[key] > 1:
                problems.append(f"{wf_id} seq {event.sequence}: second result of run {key}")
            succeeded = kind == "task.completed" and data.get("status") == S.SUCCEEDED.value
            if succeeded and (wf_id, *key) not in executed:
                problems.append(f"{wf_id} seq {event.sequence}: success of {key} never ran")
        elif kind in STAGE_ENDS:
            status = str(data.get("status") or STAGE_ENDS[kind])
            live[event.entity_id] = status
            if status in SUCCEEDED_EDGE:
                ended = stages[event.entity_id]["ref_id"]
                for merge in _merges_after(stages, ended):
                    merge_credit[merge] += 1
        elif kind == "stage.started":
            starts[event.entity_id] += 1
            live[event.entity_id] = S.RUNNING.value
            row = stages[event.entity_id]
            if row["ref_id"] in jumped_to:
                continue
            if row.get("join_type") == "MULTI_MERGE":
                # Once per requisite success, possibly later (a restart owed to a success
                # that came while it ran, even if a loop has reset that requisite since).
                merge_starts[event.entity_id] += 1
                if merge_starts[event.entity_id] > merge_credit[event.entity_id]:
                    problems.append(
                        f"{wf_id} seq {event.sequence}: MULTI_MERGE join {row['ref_id']} started "
                        f"{merge_starts[event.entity_id]} times after "
                        f"{merge_credit[event.entity_id]} requisite successes"
                    )
                continue
            problem = _join_problem(stages, live, event.entity_id)
            if problem:
                problems.append(f"{wf_id} seq {event.sequence}: {problem}")
    if plan is not None and not plan.has_loop:
        for stage in stored.stages:
            if stage.join_type.value != "MULTI_MERGE" and starts[stage.id] > 1:
                problems.append(f"{wf_id}: stage {stage.ref_id} started {starts[stage.id]} times")
    return problems


def _run_key(stages: dict[str, dict[str, Any]], entity_id: str, kind: str) -> RunKey | None:
    """The run whose result ``kind`` records, read from the state before the transition."""
    for row in stages.values():
        stage = StageExecution.from_dict(row)
        if kind == "jump.executed":
            if stage.id != entity_id:
                continue
            running = [t for t in stage.tasks if t.status is S.RUNNING]
            return (running[0].id, running[0].version, running[0].retry_count) if running else None
        for task in stage.tasks:
            if task.id == entity_id:
                return task.id, task.version, task.retry_count
    return None


def _merges_after(stages: dict[str, dict[str, Any]], ref: str) -> list[str]:
    """The ids of the multi-merge stages that have ``ref`` among their requisites."""
    return [
        stage_id
        for stage_id, row in stages.items()
        if row.get("join_type") == "MULTI_MERGE" and ref in row.get("requisite_stage_ref_ids", ())
    ]


def _join_problem(
    stages: dict[str, dict[str, Any]], live: dict[str, str], stage_id: str
) -> str | None:
    """Why ``stage_id`` should not have started now (None: its join rule holds).

    ``live``: the statuses of the stages at this point of the transition.
    """
    by_ref = {row["ref_id"]: StageExecution.from_dict(row) for row in stages.values()}
    stage = StageExecution.from_dict(stages[stage_id])
    if stage.parent_stage_id is not None or not stage.requisite_stage_ref_ids:
        return None
    ups = [by_ref[ref] for ref in sorted(stage.requisite_stage_ref_ids)]
    statuses = {u.ref_id: live.get(u.id, u.status.value) for u in ups}
    done = [ref for ref, status in statuses.items() if status in COMPLETE]
    succeeded = [
        u.ref_id
        for u in ups
        if statuses[u.ref_id] in SUCCEEDED_EDGE and stage.ref_id not in u.branches_not_taken
    ]
    join = stage.join_type.value
    if join in ("AND", "OR") and len(done) < len(ups):
        return f"{join} join {stage.ref_id} started with requisites {statuses}"
    need = {"N_OF_M": stage.join_threshold, "DISCRIMINATOR": 1}.get(join, 0)
    if len(succeeded) < need:
        return f"{join} join {stage.ref_id} (needs {need}) started with requisites {statuses}"
    return None
