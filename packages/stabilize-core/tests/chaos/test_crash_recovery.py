"""A worker SIGKILLed mid-task: a new worker with ``recover_on_start`` finishes the workflow.

Leases are long (300 s) on both workers, so the interrupted task can only be freed by
recovery (the dead owner's pid is gone), never by lease expiry within the test.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from typing import Any

import pytest

from stabilize import StageExecution, TaskExecution, Workflow

LONG_LEASE = "300"

pytestmark = pytest.mark.chaos


def assert_events_gapless(chaos_db: Any, workflow_id: str) -> None:
    sequences = chaos_db.event_sequences(workflow_id)
    assert sequences == list(range(1, len(sequences) + 1))
    stored = chaos_db.query("SELECT event_seq FROM workflows WHERE id = ?", (workflow_id,))
    assert stored == [(len(sequences),)]
    types = [e.event_type for e in chaos_db.recorded(workflow_id)]
    assert types[0] == "workflow.created"
    assert types[-1] == "workflow.completed"
    assert types.count("workflow.completed") == 1


def assert_leased_only_by(chaos_db: Any, pid: int, count: int) -> None:
    """Every queued message is leased by the (dead) worker ``pid`` far beyond now."""
    rows = chaos_db.query("SELECT lease_owner, lease_until FROM queue_messages")
    assert len(rows) == count, rows
    now_ms = time.time() * 1000
    for owner, until in rows:
        assert owner.startswith(f"{socket.gethostname()}:{pid}:"), owner
        assert until > now_ms + 200_000, "the lease must not expire during the test"


def test_killed_worker_task_reruns_once_on_a_recovering_worker(chaos_db, workers, make_chain):
    wf = chaos_db.submit(make_chain([("a", "step"), ("b", "block"), ("c", "step")]))
    common = ["--lease", LONG_LEASE, "--events"]
    a = workers.spawn(chaos_db, "serve", "--stop", str(chaos_db.stop), *common, name="worker-a")

    chaos_db.wait_until(
        lambda: any(e.ref == "b" for e in chaos_db.executions()), "worker A to start b", alive=[a]
    )
    a.kill()

    assert chaos_db.status(wf.id) == "RUNNING"
    assert_leased_only_by(chaos_db, a.pid, count=1)
    b = workers.spawn(chaos_db, "drain", "--recover", *common, name="worker-b")
    chaos_db.wait_until(
        lambda: [e.ref for e in chaos_db.executions()].count("b") == 2,
        "worker B to run b again",
        alive=[b],
    )
    chaos_db.release.touch()
    assert b.wait_exit() == 0, b.output()

    log = chaos_db.executions()
    assert [(e.ref, e.pid) for e in log] == [
        ("a", a.pid),
        ("b", a.pid),
        ("b", b.pid),
        ("c", b.pid),
    ], b.output()
    b_keys = {e.key for e in log if e.ref == "b"}
    assert len(b_keys) == 1
    assert len({e.key for e in log}) == 3
    assert "recovered 1 message(s) leased by dead worker" in b.stderr()

    done = chaos_db.store.retrieve(wf.id)
    assert done.status.value == "SUCCEEDED"
    assert [s.status.value for s in done.stages] == ["SUCCEEDED"] * 3
    outputs = {s.ref_id: s.outputs for s in done.stages}
    assert outputs == {"a": {"a_pid": a.pid}, "b": {"b_pid": b.pid}, "c": {"c_pid": b.pid}}
    assert chaos_db.query("SELECT count(*) FROM queue_messages") == [(0,)]
    assert chaos_db.query("SELECT count(*) FROM dead_letters") == [(0,)]
    assert_events_gapless(chaos_db, wf.id)


def fan_out_workflow() -> Workflow:
    def stage(ref: str, kind: str, after: set[str]) -> StageExecution:
        return StageExecution(
            ref_id=ref,
            type=kind,
            name=ref,
            requisite_stage_ref_ids=after,
            tasks=[TaskExecution.create(ref, kind, stage_start=True, stage_end=True)],
        )

    parallel = ["p1", "p2", "p3"]
    return Workflow.create(
        application="chaos",
        name="fan-out",
        stages=[
            stage("root", "step", set()),
            *(stage(ref, "block", {"root"}) for ref in parallel),
            stage("join", "step", set(parallel)),
        ],
    )


def test_killed_worker_with_parallel_tasks_each_reruns_once(chaos_db, workers):
    wf = chaos_db.submit(fan_out_workflow())
    blocked = {"p1", "p2", "p3"}
    common = ["--lease", LONG_LEASE, "--events", "--max-workers", "4"]
    a = workers.spawn(chaos_db, "serve", "--stop", str(chaos_db.stop), *common, name="worker-a")

    chaos_db.wait_until(
        lambda: {e.ref for e in chaos_db.executions()} >= blocked,
        "worker A to start p1, p2 and p3",
        alive=[a],
    )
    a.kill()

    assert_leased_only_by(chaos_db, a.pid, count=3)
    b = workers.spawn(chaos_db, "drain", "--recover", *common, name="worker-b")
    chaos_db.wait_until(
        lambda: sum(e.pid == b.pid for e in chaos_db.executions()) == 3,
        "worker B to run p1, p2 and p3 again",
        alive=[b],
    )
    chaos_db.release.touch()
    assert b.wait_exit() == 0, b.output()

    log = chaos_db.executions()
    runs = Counter(e.ref for e in log)
    assert runs == {"root": 1, "p1": 2, "p2": 2, "p3": 2, "join": 1}, log
    for ref in blocked:
        mine = [e for e in log if e.ref == ref]
        assert [e.pid for e in mine] == [a.pid, b.pid]
        assert mine[0].key == mine[1].key
    assert [e.pid for e in log if e.ref in ("root", "join")] == [a.pid, b.pid]
    assert "recovered 3 message(s) leased by dead worker" in b.stderr()

    done = chaos_db.store.retrieve(wf.id)
    assert done.status.value == "SUCCEEDED"
    assert {s.ref_id: s.outputs for s in done.stages}["join"] == {"join_pid": b.pid}
    assert chaos_db.query("SELECT count(*) FROM queue_messages") == [(0,)]
    assert_events_gapless(chaos_db, wf.id)
