"""Three worker processes share one WAL SQLite file: every task runs once, all workflows end.

The workers are the crash tests' ``chaos/worker.py``. Each logs every task execution (stage
ref, idempotency key, pid, loop pass) to a shared append-only file. The first stage of each
workflow blocks until a release file appears; a worker runs at most 4 tasks at once, so the
30 blocked tasks must spread over all three workers before the test releases them.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stabilize import (
    Orchestrator,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    Workflow,
    WorkflowStatus,
)
from stabilize.backends.sqlite import SqliteBackend
from stabilize.events import SqliteEventStore, configure_event_sourcing

WORKER = Path(__file__).parent.parent / "chaos" / "worker.py"
WORKERS = 3
PER_SHAPE = 10
DEADLINE_S = 40.0  # guards against hangs only
FAN_OUT = [f"f{i}" for i in range(1, 7)]
LOOP = ["l1", "l2", "l3"]
PASSES = 2


def stage(ref: str, kind: str, after: set[str], **context: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=kind,
        name=ref,
        context=context,
        requisite_stage_ref_ids=after,
        tasks=[TaskExecution.create(ref, kind, stage_start=True, stage_end=True)],
    )


def linear() -> Workflow:
    refs = ["gate", "s2", "s3", "s4", "s5"]
    stages = [stage("gate", "block", set())]
    stages += [stage(ref, "step", {prev}) for prev, ref in itertools.pairwise(refs)]
    return Workflow.create(application="mp", name="linear", stages=stages)


def fan_out() -> Workflow:
    stages = [stage("gate", "block", set())]
    stages += [stage(ref, "step", {"gate"}) for ref in FAN_OUT]
    stages.append(stage("join", "step", set(FAN_OUT)))
    return Workflow.create(application="mp", name="fan_out", stages=stages)


def loop() -> Workflow:
    stages = [
        stage("gate", "block", set()),
        stage("l1", "loop_start", {"gate"}),
        stage("l2", "step", {"l1"}),
        stage("l3", "loop_end", {"l2"}, loop_to="l1", passes=PASSES),
    ]
    return Workflow.create(application="mp", name="loop", stages=stages)


# Runs expected per stage ref for each workflow shape.
EXPECTED: dict[str, Counter[str]] = {
    "linear": Counter({"gate": 1, "s2": 1, "s3": 1, "s4": 1, "s5": 1}),
    "fan_out": Counter({"gate": 1, "join": 1, **dict.fromkeys(FAN_OUT, 1)}),
    "loop": Counter({"gate": 1, **dict.fromkeys(LOOP, PASSES)}),
}


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        return conn.execute(sql, params).fetchall()


def read_log(path: Path) -> list[tuple[str, str, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        ref, key, pid, pass_no = line.split("\t")
        rows.append((ref, key, int(pid), int(pass_no)))
    return rows


@pytest.fixture
def wal_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh WAL database file with event recording on in this process."""
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")
    path = tmp_path / "stabilize.db"
    events = SqliteEventStore(f"sqlite:///{path}", create_tables=True)
    configure_event_sourcing(events)
    try:
        yield path
    finally:
        configure_event_sourcing()
        events.close()


def test_three_processes_drain_thirty_workflows_each_task_once(wal_db, workers, tmp_path):
    url = f"sqlite:///{wal_db}"
    store = SqliteWorkflowStore(url)
    orchestrator = Orchestrator(SqliteQueue(url), store=store)
    assert isinstance(store.backend, SqliteBackend)
    assert store.backend.journal_mode == "WAL"
    shapes: dict[str, str] = {}
    try:
        for i in range(PER_SHAPE * len(EXPECTED)):
            wf = (linear, fan_out, loop)[i % 3]()
            store.store(wf)
            orchestrator.start(wf)
            shapes[wf.id] = wf.name
    finally:
        store.backend.close()

    log, release, stop = tmp_path / "executions.log", tmp_path / "release", tmp_path / "stop"
    log.touch()
    common = ["--log", str(log), "--release", str(release), "--stop", str(stop)]
    spawned = [
        workers.spawn(
            WORKER, [url, "serve", *common, "--events", "--max-workers", "4"], f"worker-{n}"
        )
        for n in range(WORKERS)
    ]
    pids = {w.pid for w in spawned}

    def gate_pids() -> set[int]:
        return {pid for ref, _, pid, _ in read_log(log) if ref == "gate"}

    workers.wait_until(lambda: gate_pids() == pids, "every worker to hold a blocked task")
    release.touch()

    total = len(shapes)
    complete = [s.value for s in WorkflowStatus if s.is_complete]
    finished = f"SELECT count(*) FROM workflows WHERE status IN ({','.join('?' * len(complete))})"
    workers.wait_until(
        lambda: query(wal_db, finished, tuple(complete)) == [(total,)], "every workflow to finish"
    )
    stop.touch()
    for w in spawned:
        assert w.wait(timeout=DEADLINE_S) == 0, workers.errors()

    statuses = dict(query(wal_db, "SELECT id, status FROM workflows"))
    assert statuses == dict.fromkeys(shapes, "SUCCEEDED")
    assert query(wal_db, "SELECT count(*) FROM queue_messages") == [(0,)]
    assert query(wal_db, "SELECT count(*) FROM dead_letters") == [(0,)]

    executions = read_log(log)
    # Every execution (idempotency key + loop pass) happened exactly once...
    once = Counter((key, pass_no) for _, key, _, pass_no in executions)
    assert [k for k, n in once.items() if n != 1] == []
    # ...and every stage ran as many times as its shape says (the loop stages once a pass).
    runs: dict[str, Counter[str]] = {wf_id: Counter() for wf_id in shapes}
    for ref, key, _, _ in executions:
        runs[key.split(":", 1)[0]][ref] += 1
    assert {wf_id: EXPECTED[shape] for wf_id, shape in shapes.items()} == runs
    loop_passes = Counter((ref, p) for ref, _, _, p in executions if ref in LOOP)
    assert loop_passes == {(ref, p): PER_SHAPE for ref in LOOP for p in range(1, PASSES + 1)}
    assert {pid for _, _, pid, _ in executions} == pids  # at least 2: all three did work

    log = SqliteEventStore(f"sqlite:///{wal_db}", create_tables=False)
    for wf_id in shapes:
        sequences = [e.sequence for e in log.get_events(wf_id)]
        assert sequences == list(range(1, len(sequences) + 1)), wf_id
        assert query(wal_db, "SELECT event_seq FROM workflows WHERE id = ?", (wf_id,)) == [
            (len(sequences),)
        ]
