"""State-based patterns, timers, cancellation, sub-workflows, loops and dynamic fan-out, end to
end on a fresh SQLite file and on a fresh PostgreSQL schema per test (the ``backend`` fixture).
The tests with three worker processes run on SQLite in WAL mode (their worker scripts take a
SQLite URL; worker processes on PostgreSQL are tested in tests/postgres).

Real tasks run through ``QueueProcessor``; the tests check what the stored workflows show and
what the tasks recorded. Tasks that must stay running wait on their cancellation token (the
engine sets it) or on a condition the test sets; nothing waits on a clock to synchronise.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stabilize import (
    MultiInstanceConfig,
    Orchestrator,
    SignalError,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
    repeat_until,
    sub_workflow_config,
    while_loop,
)
from stabilize.queue.processor.config import QueueProcessorConfig

S = WorkflowStatus
MUTEX_WORKER = Path(__file__).with_name("mutex_worker.py")
if TYPE_CHECKING:
    from integration.conftest import Workers

HANG_GUARD = 30.0
"""Seconds a condition may take before a test gives up (guards hangs only)."""

# The ``make_engine`` fixture of integration/conftest.py and the engine it builds (its
# store, queue, registry, processor, orchestrator and query helpers).
MakeEngine = Callable[..., Any]
Engine = Any


def wait_until(condition: Callable[[], bool], what: str, timeout: float = HANG_GUARD) -> None:
    """Poll ``condition`` until it holds; the deadline only guards against hangs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def stage(
    ref: str, task: str = "noop", requires: Iterable[str] = (), **flow: Any
) -> StageExecution:
    context = flow.pop("context", {})
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        context=dict(context),
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(ref, task)],
        **flow,
    )


def workflow(*stages: StageExecution, context: dict[str, Any] | None = None) -> Workflow:
    return Workflow.create("tests", "state-patterns", list(stages), context=context)


def statuses(wf: Workflow) -> dict[str, tuple[str, str | None]]:
    return {s.ref_id: (s.status.value, s.status_reason) for s in wf.stages}


def config(**kw: Any) -> QueueProcessorConfig:
    kw.setdefault("poll_frequency_ms", 10)
    kw.setdefault("cancel_check_interval_seconds", 0.02)
    return QueueProcessorConfig(**kw)


class Log:
    """A thread-safe record of what tasks did, in the order they did it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[Any, ...]] = []

    def add(self, *item: Any) -> None:
        with self._lock:
            self.items.append(item)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [i for i in self.items if i[0] == kind]

    def kinds(self) -> list[str]:
        with self._lock:
            return [str(i[0]) for i in self.items]


@pytest.fixture
def log() -> Log:
    return Log()


def holding(log: Log) -> Callable[[StageExecution], TaskResult]:
    """A task that runs until the engine cancels it; it records both moments."""

    def hold(s: StageExecution) -> TaskResult:
        log.add("entered", s.ref_id)
        token = s._cancel_token
        assert token is not None
        canceled = token.wait(HANG_GUARD)
        log.add("left", s.ref_id, canceled)
        return TaskResult.success(outputs={"held": True})

    return hold


def recording(log: Log, **outputs: Any) -> Callable[[StageExecution], TaskResult]:
    def run(s: StageExecution) -> TaskResult:
        log.add("ran", s.ref_id, dict(s.context))
        return TaskResult.success(outputs=dict(outputs))

    return run


def ran(log: Log) -> list[str]:
    return [str(i[1]) for i in log.of("ran")]


def done(engine: Engine, wf: Workflow) -> Callable[[], bool]:
    return lambda: engine.store.retrieve(wf.id).status.is_complete


def stage_status(engine: Engine, workflow_id: str, ref: str) -> WorkflowStatus:
    wf: Workflow = engine.store.retrieve(workflow_id)
    return wf.stage_by_ref_id(ref).status


# -- signals -----------------------------------------------------------------------------


def test_signal_resumes_a_wait_for_signal_stage(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("record", recording(log))
    wf = workflow(stage("approve", "wait_for_signal"), stage("after", "record", ["approve"]))
    stored = engine.run(wf)
    assert stored.status is S.RUNNING
    assert statuses(stored)["approve"] == ("SUSPENDED", None)
    assert engine.count("queue_messages") == 0  # a suspended stage holds no message
    assert ran(log) == []

    engine.orchestrator.signal(wf.id, "approve", "approved", {"by": "qa"}, user="alice")
    engine.processor.process_all(timeout=HANG_GUARD)

    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED
    approve = final.stage_by_ref_id("approve")
    assert approve.outputs == {
        "signal": "approved",
        "signal_data": {"by": "qa"},
        "signal_user": "alice",
    }
    [(_, _, seen)] = log.of("ran")
    assert seen["signal_data"] == {"by": "qa"}
    with pytest.raises(SignalError):
        engine.orchestrator.signal(wf.id, "approve", "again")


def test_signal_sent_before_the_workflow_starts_is_kept_and_delivered(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(config=config())
    wf = workflow(stage("first"), stage("approve", "wait_for_signal", ["first"]))
    engine.store.store(wf)
    engine.orchestrator.signal(wf.id, "approve", "early", {"n": 1})
    assert [
        p["name"] for p in engine.store.retrieve(wf.id).stage_by_ref_id("approve").pending_signals
    ] == ["early"]
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=HANG_GUARD)
    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED
    approve = final.stage_by_ref_id("approve")
    assert approve.outputs["signal"] == "early"
    assert approve.outputs["signal_data"] == {"n": 1}
    assert approve.pending_signals == []


def test_signal_sent_while_an_earlier_task_of_the_stage_runs_is_delivered(
    make_engine: MakeEngine, log: Log
) -> None:
    engine = make_engine(config=config())
    release = threading.Event()

    def prepare(s: StageExecution) -> TaskResult:
        log.add("entered", s.ref_id)
        assert release.wait(HANG_GUARD)
        return TaskResult.success()

    engine.registry.register("prepare", prepare)
    wf = workflow(
        StageExecution(
            ref_id="approve",
            name="approve",
            tasks=[
                TaskExecution.create("prepare", "prepare"),
                TaskExecution.create("wait", "wait_for_signal"),
            ],
        )
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    try:
        wait_until(lambda: bool(log.of("entered")), "the first task to run")
        assert stage_status(engine, wf.id, "approve") is S.RUNNING
        with pytest.raises(SignalError):
            engine.orchestrator.signal(wf.id, "approve", "now", persistent=False)
        engine.orchestrator.signal(wf.id, "approve", "kept", {"k": 2})
    finally:
        release.set()
    wait_until(done(engine, wf), "the workflow to finish")
    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED
    assert final.stage_by_ref_id("approve").outputs["signal"] == "kept"
    assert final.stage_by_ref_id("approve").outputs["signal_data"] == {"k": 2}


def test_deferred_choice_between_two_waiting_branches(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage("by_mail", "wait_for_signal", deferred_choice_group="reply"),
        stage("by_phone", "wait_for_signal", deferred_choice_group="reply"),
        stage("mail_followup", "record", ["by_mail"]),
        stage("phone_followup", "record", ["by_phone"]),
        stage("close", "record", ["mail_followup", "phone_followup"]),
    )
    stored = engine.run(wf)
    assert statuses(stored)["by_mail"] == ("SUSPENDED", None)
    assert statuses(stored)["by_phone"] == ("SUSPENDED", None)

    engine.orchestrator.signal(wf.id, "by_phone", "answered")
    with pytest.raises(SignalError):
        engine.orchestrator.signal(wf.id, "by_mail", "answered")
    engine.processor.process_all(timeout=HANG_GUARD)

    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED
    assert statuses(final) == {
        "by_mail": ("CANCELED", "withdrawn"),
        "by_phone": ("SUCCEEDED", None),
        "mail_followup": ("SKIPPED", "branch_not_taken"),
        "phone_followup": ("SUCCEEDED", None),
        "close": ("SUCCEEDED", None),
    }
    assert ran(log) == ["phone_followup", "close"]


# -- milestone ---------------------------------------------------------------------------


def test_milestone_stage_runs_while_the_milestone_waits_and_a_late_one_is_skipped(
    make_engine: MakeEngine, log: Log
) -> None:
    engine = make_engine(config=config())
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage("during", "record", milestone_ref_id="review", milestone_status=S.SUSPENDED),
        stage("review", "wait_for_signal"),
        stage("late", "record", ["review"], milestone_ref_id="review"),
        stage("end", "record", ["late"]),
    )
    stored = engine.run(wf)
    assert stored.status is S.RUNNING
    assert statuses(stored)["during"] == ("SUCCEEDED", None)
    assert statuses(stored)["review"] == ("SUSPENDED", None)
    assert ran(log) == ["during"]

    engine.orchestrator.signal(wf.id, "review", "done")
    engine.processor.process_all(timeout=HANG_GUARD)
    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED
    assert statuses(final)["late"] == ("SKIPPED", "milestone_passed")
    assert ran(log) == ["during", "end"]


def test_milestone_wait_survives_another_worker_loading_the_workflow(
    make_engine: MakeEngine, log: Log
) -> None:
    """A stage waiting for its milestone keeps waiting across a reload of the workflow.

    Clearing the cache stands for the next transition being run by another worker process
    (or a restarted one), which loads the workflow from the database."""
    engine = make_engine(config=config(max_workers=1))
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage("during", "record", milestone_ref_id="review", milestone_status=S.SUSPENDED),
        stage("review", "wait_for_signal"),
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    wait_until(lambda: engine.processor.process_one(), "the start to be processed")
    waiting = ("NOT_STARTED", "waiting_for_milestone")
    assert statuses(engine.store.retrieve(wf.id))["during"] == waiting
    engine.backend.cache.clear()
    engine.processor.process_all(timeout=HANG_GUARD)
    engine.orchestrator.signal(wf.id, "review", "done")
    engine.processor.process_all(timeout=HANG_GUARD)
    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED
    assert statuses(final)["during"] == ("SUCCEEDED", None)
    assert ran(log) == ["during"]


# -- mutex -------------------------------------------------------------------------------


class Critical:
    """Counts tasks inside a critical section and checks the database's mutex holder."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self.inside: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.entries: list[tuple[str, str]] = []
        self.problems: list[str] = []

    def __call__(self, s: StageExecution) -> TaskResult:
        key = str(s.context["key"])
        with self._lock:
            self.inside[key] = self.inside.get(key, 0) + 1
            self.most[key] = max(self.most.get(key, 0), self.inside[key])
            self.entries.append((key, s.workflow_id or ""))
        try:
            holder = self.engine.query(
                "SELECT workflow_id, stage_id FROM mutex_holders WHERE key = ?", (key,)
            )
            if holder != [(s.workflow_id, s.id)]:
                self.problems.append(f"{s.workflow_id}/{s.ref_id} ran while {holder} held {key}")
            mutex_key = (
                "body::jsonb ->> 'mutex_key'"
                if self.engine.is_postgres
                else "json_extract(body, '$.mutex_key')"
            )
            running = self.engine.query(
                f"SELECT count(*) FROM stages WHERE status = 'RUNNING' AND {mutex_key} = ?",
                (key,),
            )[0][0]
            if running != 1:
                self.problems.append(f"{running} stages with key {key} RUNNING")
        finally:
            with self._lock:
                self.inside[key] -= 1
        return TaskResult.success(outputs={f"done_{key}": True})


def test_mutex_stages_never_run_together_across_workflows(make_engine: MakeEngine) -> None:
    engine = make_engine(config=config(max_workers=8))
    critical = Critical(engine)
    engine.registry.register("crit", critical)
    wfs = [
        workflow(
            stage("prep"),
            stage("crit", "crit", ["prep"], mutex_key="db", context={"key": "db"}),
            stage("other", "crit", ["prep"], mutex_key="api", context={"key": "api"}),
            stage("free", "noop", ["prep"]),
            stage("end", "noop", ["crit", "other", "free"]),
        )
        for _ in range(6)
    ]
    for wf in wfs:
        engine.store.store(wf)
        engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=HANG_GUARD)

    for wf in wfs:
        final = engine.store.retrieve(wf.id)
        assert final.status is S.SUCCEEDED, statuses(final)
        assert not final.stage_by_ref_id("crit").mutex_held
    assert critical.problems == []
    assert critical.most == {"db": 1, "api": 1}
    assert sorted(critical.entries) == sorted(
        [("db", wf.id) for wf in wfs] + [("api", wf.id) for wf in wfs]
    )
    assert engine.count("mutex_holders") == 0
    assert engine.count("mutex_waiters") == 0
    assert engine.count("queue_messages") == 0


# SQLite only (no ``backend``): mutex_worker.py takes a SQLite URL and reads the file directly.
# The mutex runs on both backends in test_mutex_stages_never_run_together_across_workflows
# (eight threads, one process); PostgreSQL worker processes are tested in tests/postgres.
def test_mutex_holds_across_three_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: Workers
) -> None:
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")
    db = tmp_path / "mutex.db"
    url = f"sqlite:///{db}"
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()
    orchestrator = Orchestrator(queue, store=store)
    log_file, release, stop = tmp_path / "critical.log", tmp_path / "release", tmp_path / "stop"
    keys = ["k1", "k2"]
    threads = 4
    wfs = [
        workflow(
            stage("gate", "gate"),
            *(stage(f"crit_{k}", "crit", ["gate"], mutex_key=k, context={"key": k}) for k in keys),
            stage("free", "free", ["gate"]),
        )
        for _ in range(3 * threads)
    ]
    for wf in wfs:
        store.store(wf)
        orchestrator.start(wf)
    for _ in range(3):
        workers.spawn(
            MUTEX_WORKER,
            [
                url,
                "--log",
                str(log_file),
                "--release",
                str(release),
                "--stop",
                str(stop),
                "--max-workers",
                str(threads),
            ],
        )

    def logged(kind: str) -> list[list[str]]:
        if not log_file.exists():
            return []
        return [line.split() for line in log_file.read_text().splitlines() if line.startswith(kind)]

    # Every gate runs (blocked) before any is released: each process holds `threads` of them.
    workers.wait_until(lambda: len(logged("gate")) == len(wfs), "every gate to run")
    assert len({g[2] for g in logged("gate")}) == 3
    release.touch()

    def all_done() -> bool:
        return all(store.retrieve(wf.id).status.is_complete for wf in wfs)

    workers.wait_until(all_done, "every workflow to finish")
    workers.wait_until(
        lambda: _count(db, "queue_messages") == 0 and _count(db, "mutex_holders") == 0,
        "the last mutex to be released",
    )
    stop.touch()
    for worker in workers.started:
        worker.proc.wait(timeout=HANG_GUARD)
    assert [w.proc.returncode for w in workers.started] == [0, 0, 0], workers.errors()

    for wf in wfs:
        assert store.retrieve(wf.id).status is S.SUCCEEDED
    lines = [line.split() for line in log_file.read_text().splitlines()]
    for key in keys:
        mine = [line for line in lines if line[0] in ("enter", "exit") and line[1] == key]
        assert len(mine) == 2 * len(wfs)
        for i in range(0, len(mine), 2):
            enter, leave = mine[i], mine[i + 1]
            assert enter[0] == "enter", (key, mine[i : i + 2])
            assert leave[0] == "exit", (key, mine[i : i + 2])
            assert enter[2:4] == leave[2:4]  # the same workflow and process
            assert enter[4] == "ok", enter
        assert sorted(e[2] for e in mine if e[0] == "enter") == sorted(wf.id for wf in wfs)
    assert _count(db, "mutex_waiters") == 0


def _count(path: Path, table: str) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# -- stage deadline ----------------------------------------------------------------------


def test_stage_deadline_fails_the_stage_and_cancels_its_task(
    make_engine: MakeEngine, log: Log
) -> None:
    engine = make_engine(config=config())
    engine.registry.register("hold", holding(log))
    engine.registry.register("record", recording(log))
    wf = workflow(stage("slow", "hold", deadline_seconds=0.2), stage("after", "record", ["slow"]))
    final = engine.run(wf)
    assert final.status is S.TERMINAL
    assert statuses(final)["slow"] == ("TERMINAL", None)
    assert statuses(final)["after"] == ("NOT_STARTED", None)
    assert final.error is not None
    assert "stage 'slow' exceeded its deadline of 0.2s" in final.error
    assert final.stage_by_ref_id("slow").tasks[0].status is S.CANCELED
    wait_until(lambda: bool(log.of("left")), "the task to notice the cancel")
    assert log.of("left") == [("left", "slow", True)]
    assert ran(log) == []
    assert engine.count("queue_messages") == 0


def test_stage_deadline_routes_to_a_later_stage(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("hold", holding(log))
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage("slow", "hold", deadline_seconds=0.2, deadline_route="fallback"),
        stage("normal", "record", ["slow"]),
        stage("fallback", "record", ["normal"]),
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED
    assert statuses(final) == {
        "slow": ("SUCCEEDED", "deadline_routed"),
        "normal": ("SKIPPED", None),
        "fallback": ("SUCCEEDED", None),
    }
    wait_until(lambda: bool(log.of("left")), "the task to notice the cancel")
    assert log.of("left") == [("left", "slow", True)]
    assert ran(log) == ["fallback"]


def test_stage_deadline_does_not_fire_for_a_stage_that_finished(
    make_engine: MakeEngine, log: Log
) -> None:
    engine = make_engine(config=config())
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage("quick", "record", deadline_seconds=0.1), stage("after", "record", ["quick"])
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED
    assert ran(log) == ["quick", "after"]
    assert engine.count("queue_messages") == 0


# -- cancel a stage or a region ----------------------------------------------------------


def test_cancel_stage_on_a_running_workflow(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("hold", holding(log))
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage("slow", "hold"),
        stage("slow_next", "record", ["slow"]),
        stage("quick", "record"),
        stage("join", "record", ["slow_next", "quick"]),
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    wait_until(lambda: bool(log.of("entered")), "the slow stage to run")
    with pytest.raises(KeyError):
        engine.orchestrator.cancel_stage(wf.id, "nope")
    engine.orchestrator.cancel_stage(wf.id, "slow", user="ops", reason="too slow")
    wait_until(done(engine, wf), "the workflow to finish")
    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED
    assert statuses(final) == {
        "slow": ("CANCELED", "canceled"),
        "slow_next": ("SKIPPED", "branch_not_taken"),
        "quick": ("SUCCEEDED", None),
        "join": ("SUCCEEDED", None),
    }
    wait_until(lambda: bool(log.of("left")), "the task to notice the cancel")
    assert log.of("left") == [("left", "slow", True)]
    assert sorted(ran(log)) == ["join", "quick"]


def test_cancel_region_on_a_running_workflow(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("hold", holding(log))
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage("start", "record"),
        stage("extra1", "hold", ["start"], cancel_region="extras"),
        stage("extra2", "record", ["extra1"], cancel_region="extras"),
        stage("main", "record", ["start"]),
        stage("join", "record", ["extra2", "main"]),
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    wait_until(lambda: bool(log.of("entered")), "the region to run")
    with pytest.raises(KeyError):
        engine.orchestrator.cancel_region(wf.id, "nowhere")
    engine.orchestrator.cancel_region(wf.id, "extras", user="ops")
    wait_until(done(engine, wf), "the workflow to finish")
    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED
    assert statuses(final) == {
        "start": ("SUCCEEDED", None),
        "extra1": ("CANCELED", "canceled"),
        "extra2": ("CANCELED", "canceled"),
        "main": ("SUCCEEDED", None),
        "join": ("SUCCEEDED", None),
    }
    wait_until(lambda: bool(log.of("left")), "the task to notice the cancel")
    assert log.of("left") == [("left", "extra1", True)]
    assert "extra2" not in ran(log)


# -- durable timers ----------------------------------------------------------------------


def _wait_frees_the_worker(engine: Engine, log: Log, wait_context: dict[str, Any]) -> Workflow:
    """Start a workflow whose first stage waits; once the wait is pending, start another
    workflow on the same single worker and check that it runs during the wait."""
    engine.registry.register("record", recording(log))

    def observe(s: StageExecution) -> TaskResult:
        log.add("ran", s.ref_id, {"wait": stage_status(engine, str(s.context["other"]), "wait")})
        return TaskResult.success()

    engine.registry.register("observe", observe)
    waiting = workflow(
        stage("wait", "wait", context=wait_context), stage("after", "record", ["wait"])
    )
    engine.store.store(waiting)
    engine.orchestrator.start(waiting)

    def pending() -> bool:
        engine.processor.process_one()
        wait_stage = engine.store.retrieve(waiting.id).stage_by_ref_id("wait")
        return "until" in wait_stage.tasks[0].state and engine.processor.active_count == 0

    wait_until(pending, "the wait to be pending")
    assert stage_status(engine, waiting.id, "wait") is S.RUNNING
    other = workflow(stage("other", "observe", context={"other": waiting.id}))
    engine.store.store(other)
    engine.orchestrator.start(other)
    engine.processor.process_all(timeout=HANG_GUARD)

    assert engine.store.retrieve(other.id).status is S.SUCCEEDED
    final: Workflow = engine.store.retrieve(waiting.id)
    assert final.status is S.SUCCEEDED
    # The other workflow ran while the wait was pending, before the stage after the wait.
    assert ran(log) == ["other", "after"]
    assert log.of("ran")[0][2] == {"wait": S.RUNNING}
    return final


def test_wait_time_frees_the_worker_while_it_waits(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config(max_workers=1))
    final = _wait_frees_the_worker(engine, log, {"waitTime": 1.0})
    wait_stage = final.stage_by_ref_id("wait")
    assert isinstance(wait_stage.tasks[0].state["until"], float)
    assert "_wait_until" not in wait_stage.context


def test_wait_until_an_iso_timestamp_frees_the_worker(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config(max_workers=1))
    target = datetime.now(UTC) + timedelta(seconds=1)
    iso = target.replace(tzinfo=None).isoformat() + "Z"
    final = _wait_frees_the_worker(engine, log, {"waitUntil": iso})
    assert final.stage_by_ref_id("wait").tasks[0].state["until"] == target.timestamp()


def test_wait_until_a_past_timestamp_does_not_wait(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage("wait", "wait", context={"waitUntil": "2001-01-01T00:00:00"}),
        stage("after", "record", ["wait"]),
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED
    assert final.stage_by_ref_id("wait").tasks[0].state == {}
    assert "_wait_until" not in final.stage_by_ref_id("wait").context


# -- sub-workflows -----------------------------------------------------------------------


def parent_stage(ref: str, child: dict[str, Any], **context: Any) -> StageExecution:
    ctx = {"_sub_workflow_config": child, "_sub_workflow_poll_seconds": 0.02, **context}
    return stage(ref, "sub_workflow", context=ctx)


def child_id_of(engine: Engine, parent: Workflow, ref: str = "child") -> str | None:
    value = engine.store.retrieve(parent.id).stage_by_ref_id(ref).context.get("_sub_workflow_id")
    return value if isinstance(value, str) else None


def test_sub_workflow_runs_the_child_and_returns_its_outputs(
    make_engine: MakeEngine, log: Log
) -> None:
    engine = make_engine(config=config())
    engine.registry.register("answer", lambda s: {"answer": 42, "seen": s.context.get("given")})
    engine.registry.register("final", lambda s: {"final": s.context["answer"] + 1})
    engine.registry.register("record", recording(log))
    child = sub_workflow_config(
        "child",
        [stage("c1", "answer"), stage("c2", "final", ["c1"])],
        context={"given": "hello"},
    )
    wf = workflow(parent_stage("child", child), stage("after", "record", ["child"]))
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED, final.error
    outputs = final.stage_by_ref_id("child").outputs
    child_id = outputs["sub_workflow_id"]
    assert outputs["sub_workflow_status"] == "SUCCEEDED"
    assert outputs["sub_workflow_outputs"] == {"answer": 42, "seen": "hello", "final": 43}
    stored_child = engine.store.retrieve(child_id)
    assert stored_child.status is S.SUCCEEDED
    assert stored_child.context["_parent_workflow_id"] == wf.id
    assert stored_child.context["_recursion_depth"] == 1
    [(_, _, seen)] = log.of("ran")
    assert seen["sub_workflow_outputs"]["final"] == 43
    assert engine.count("workflows") == 2


def test_sub_workflow_failure_fails_the_parent_stage_naming_the_child(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(config=config())
    engine.registry.register("broken", lambda s: TaskResult.terminal("child broke"))
    child = sub_workflow_config("child", [stage("c1", "broken")])
    wf = workflow(parent_stage("child", child), stage("after", "noop", ["child"]))
    final = engine.run(wf)
    assert final.status is S.TERMINAL
    child_stage = final.stage_by_ref_id("child")
    assert child_stage.status is S.TERMINAL
    child_id = child_stage.outputs["sub_workflow_id"]
    assert child_stage.outputs["sub_workflow_status"] == "TERMINAL"
    assert engine.store.retrieve(child_id).status is S.TERMINAL
    assert final.error is not None
    assert child_id in final.error
    assert "child broke" in final.error
    assert statuses(final)["after"] == ("NOT_STARTED", None)


def _running_parent_and_child(engine: Engine) -> tuple[Workflow, str]:
    child = sub_workflow_config("child", [stage("c1", "wait_for_signal")])
    wf = workflow(parent_stage("child", child))
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    wait_until(lambda: child_id_of(engine, wf) is not None, "the child to start")
    child_id = child_id_of(engine, wf)
    assert child_id is not None
    wait_until(lambda: stage_status(engine, child_id, "c1") is S.SUSPENDED, "the child to suspend")
    return wf, child_id


def test_canceling_the_parent_cancels_the_child(make_engine: MakeEngine) -> None:
    engine = make_engine(config=config())
    wf, child_id = _running_parent_and_child(engine)
    engine.orchestrator.cancel(wf.id, user="ops", reason="stop all")
    wait_until(lambda: engine.store.retrieve(child_id).status.is_complete, "the child to end")
    assert engine.store.retrieve(wf.id).status is S.CANCELED
    child = engine.store.retrieve(child_id)
    assert child.status is S.CANCELED
    assert child.stage_by_ref_id("c1").status is S.CANCELED


def test_canceling_the_child_cancels_the_parent(make_engine: MakeEngine) -> None:
    engine = make_engine(config=config())
    wf, child_id = _running_parent_and_child(engine)
    engine.orchestrator.cancel(child_id, user="ops", reason="not needed")
    wait_until(done(engine, wf), "the parent to end")
    parent = engine.store.retrieve(wf.id)
    assert parent.status is S.CANCELED
    assert parent.stage_by_ref_id("child").status is S.CANCELED
    assert parent.stage_by_ref_id("child").outputs["sub_workflow_status"] == "CANCELED"
    assert engine.store.retrieve(child_id).status is S.CANCELED


def test_sub_workflow_recursion_bound(make_engine: MakeEngine) -> None:
    engine = make_engine(config=config())
    grandchild = sub_workflow_config("grandchild", [stage("g1", "noop")])
    child = sub_workflow_config(
        "child", [parent_stage("nested", grandchild, _max_recursion_depth=1)]
    )
    wf = workflow(parent_stage("child", child, _max_recursion_depth=1))
    final = engine.run(wf)
    assert final.status is S.TERMINAL
    assert final.error is not None
    assert "nesting depth 2 exceeds _max_recursion_depth=1" in final.error
    child_id = final.stage_by_ref_id("child").outputs["sub_workflow_id"]
    assert child_id in final.error
    stored_child = engine.store.retrieve(child_id)
    assert stored_child.status is S.TERMINAL
    assert stored_child.stage_by_ref_id("nested").status is S.TERMINAL
    assert engine.count("workflows") == 2  # the grandchild was never created


# SQLite only (no ``backend``), as the mutex test above: the worker script takes a SQLite URL.
def test_sub_workflows_run_across_two_worker_processes(tmp_path: Path, workers: Workers) -> None:
    db = tmp_path / "sub.db"
    url = f"sqlite:///{db}"
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()
    orchestrator = Orchestrator(queue, store=store)
    log_file, release, stop = tmp_path / "sub.log", tmp_path / "release", tmp_path / "stop"
    child = sub_workflow_config("child", [stage("c1", "child"), stage("c2", "free", ["c1"])])
    wfs = [
        workflow(parent_stage("child", child), stage("after", "free", ["child"])) for _ in range(6)
    ]
    for wf in wfs:
        store.store(wf)
        orchestrator.start(wf)
    for _ in range(2):
        workers.spawn(
            MUTEX_WORKER,
            [url, "--log", str(log_file), "--release", str(release), "--stop", str(stop)],
        )

    def all_done() -> bool:
        return all(store.retrieve(wf.id).status.is_complete for wf in wfs)

    workers.wait_until(all_done, "every parent to finish")
    stop.touch()
    for worker in workers.started:
        worker.proc.wait(timeout=HANG_GUARD)
    assert [w.proc.returncode for w in workers.started] == [0, 0], workers.errors()
    pids = {str(w.pid) for w in workers.started}
    children: dict[str, str] = {}
    for line in log_file.read_text().splitlines():
        kind, wf_id, pid = line.split()
        assert kind == "child"
        assert pid in pids
        children[wf_id] = pid
    for wf in wfs:
        final = store.retrieve(wf.id)
        assert final.status is S.SUCCEEDED, final.error
        outputs = final.stage_by_ref_id("child").outputs
        assert outputs["sub_workflow_status"] == "SUCCEEDED"
        child_id = outputs["sub_workflow_id"]
        assert outputs["sub_workflow_outputs"] == {"child_pid": int(children[child_id])}
        assert store.retrieve(child_id).context["_parent_workflow_id"] == wf.id
    assert len(children) == len(wfs)


# -- structured loops --------------------------------------------------------------------


def counting(log: Log) -> Callable[[StageExecution], TaskResult]:
    def inc(s: StageExecution) -> TaskResult:
        count = int(s.context.get("count", 0))
        log.add("inc", count)
        return TaskResult.success(
            outputs={"count": count + 1, "history": [*s.context.get("history", []), count]}
        )

    return inc


def test_repeat_until_carries_state_between_iterations(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("inc", counting(log))
    engine.registry.register("record", recording(log))
    wf = workflow(
        *repeat_until("loop", [stage("inc", "inc")], until="count >= 3", max_iterations=5),
        stage("after", "record", ["loop"]),
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED, final.error
    assert [i[1] for i in log.of("inc")] == [0, 1, 2]
    loop = final.stage_by_ref_id("loop").outputs
    assert loop["loop_iterations"] == 3
    assert loop["loop_condition_met"] is True
    [(_, _, seen)] = log.of("ran")
    assert seen["count"] == 3
    assert seen["history"] == [0, 1, 2]


def test_repeat_until_fails_when_exhausted(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("inc", counting(log))
    wf = workflow(
        *repeat_until(
            "loop",
            [stage("inc", "inc")],
            until="count >= 100",
            max_iterations=2,
            fail_when_exhausted=True,
        ),
        stage("after", "noop", ["loop"]),
    )
    final = engine.run(wf)
    assert final.status is S.TERMINAL
    assert final.error is not None
    assert "loop 'loop' reached max_iterations=2" in final.error
    assert [i[1] for i in log.of("inc")] == [0, 1]


def test_repeat_until_without_fail_ends_after_max_iterations(
    make_engine: MakeEngine, log: Log
) -> None:
    engine = make_engine(config=config())
    engine.registry.register("inc", counting(log))
    wf = workflow(
        *repeat_until("loop", [stage("inc", "inc")], until="count >= 100", max_iterations=3)
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED
    assert [i[1] for i in log.of("inc")] == [0, 1, 2]
    assert final.stage_by_ref_id("loop").outputs["loop_condition_met"] is False
    assert final.stage_by_ref_id("loop").outputs["loop_iterations"] == 3


def test_while_loop_carries_state_into_the_condition(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("inc", counting(log))
    engine.registry.register("record", recording(log))
    wf = workflow(
        *while_loop("w", [stage("inc", "inc")], condition="count < 3", max_iterations=5),
        stage("after", "record", ["w_done"]),
        context={"count": 0},
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED, final.error
    assert [i[1] for i in log.of("inc")] == [0, 1, 2]
    [(_, _, seen)] = log.of("ran")
    assert seen["count"] == 3
    assert seen["w_iterations"] == 3
    assert seen["w_condition_met"] is True


def test_while_loop_with_a_false_condition_skips_the_body(
    make_engine: MakeEngine, log: Log
) -> None:
    engine = make_engine(config=config())
    engine.registry.register("inc", counting(log))
    engine.registry.register("record", recording(log))
    wf = workflow(
        *while_loop("w", [stage("inc", "inc")], condition="count < 3", max_iterations=5),
        stage("after", "record", ["w_done"]),
        context={"count": 10},
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED, final.error
    assert log.of("inc") == []
    assert statuses(final)["inc"][0] == "SKIPPED"
    assert ran(log) == ["after"]


def test_while_loop_fails_when_exhausted(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config())
    engine.registry.register("inc", counting(log))
    wf = workflow(
        *while_loop(
            "w",
            [stage("inc", "inc")],
            condition="count < 100",
            max_iterations=2,
            fail_when_exhausted=True,
        ),
        context={"count": 0},
    )
    final = engine.run(wf)
    assert final.status is S.TERMINAL
    assert final.error is not None
    assert "reached max_iterations=2" in final.error
    assert [i[1] for i in log.of("inc")] == [0, 1]


# -- dynamic fan-out ---------------------------------------------------------------------


class Gate:
    """Instances entering wait here until the test opens it; counts how many are inside."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.inside = 0
        self.most = 0
        self.open = False

    def __call__(self, s: StageExecution) -> TaskResult:
        with self._cond:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self._cond.notify_all()
            opened = self._cond.wait_for(lambda: self.open, timeout=HANG_GUARD)
            self.inside -= 1
        if not opened:
            return TaskResult.terminal("the gate never opened")
        item = int(s.context["item"])
        return TaskResult.success(outputs={"double": 2 * item, "index": s.mi_index})

    def count(self) -> int:
        with self._cond:
            return self.inside

    def release(self) -> None:
        with self._cond:
            self.open = True
            self._cond.notify_all()


def test_fan_out_with_a_concurrency_limit_reducers_and_a_downstream_stage(
    make_engine: MakeEngine, log: Log
) -> None:
    engine = make_engine(config=config(max_workers=8))
    gate = Gate()
    engine.registry.register("gate", gate)
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage("source", "noop"),
        stage(
            "each",
            "gate",
            ["source"],
            context={"numbers": [1, 2, 3, 4, 5, 6]},
            mi_config=MultiInstanceConfig(items_key="numbers", max_concurrency=2),
            output_reducers={"double": "sum"},
        ),
        stage("after", "record", ["each"]),
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    try:
        wait_until(lambda: gate.count() == 2, "two instances to run")
        instances = [
            s for s in engine.store.retrieve(wf.id).stages if s.parent_stage_id is not None
        ]
        assert len(instances) == 6
        assert sorted(s.status.value for s in instances) == ["NOT_STARTED"] * 4 + ["RUNNING"] * 2
    finally:
        gate.release()
    wait_until(done(engine, wf), "the workflow to finish")
    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED, final.error
    assert gate.most == 2
    each = final.stage_by_ref_id("each")
    assert each.outputs["instances"] == [{"double": 2 * i, "index": i - 1} for i in range(1, 7)]
    assert each.outputs["double"] == 42
    [(_, _, seen)] = log.of("ran")
    assert seen["instances"] == each.outputs["instances"]
    assert seen["double"] == 42


def test_fan_out_k_of_n_cancels_the_remaining_instances(make_engine: MakeEngine, log: Log) -> None:
    engine = make_engine(config=config(max_workers=8))

    def probe(s: StageExecution) -> TaskResult:
        if s.context["item"] == "fast":
            return TaskResult.success(outputs={"index": s.mi_index})
        return holding(log)(s)

    engine.registry.register("probe", probe)
    engine.registry.register("record", recording(log))
    wf = workflow(
        stage(
            "each",
            "probe",
            context={"items": ["slow", "fast", "slow", "fast"]},
            mi_config=MultiInstanceConfig(items_key="items", join_threshold=2),
        ),
        stage("after", "record", ["each"]),
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED, final.error
    each = final.stage_by_ref_id("each")
    assert each.outputs["instances"] == [None, {"index": 1}, None, {"index": 3}]
    instances = {
        s.ref_id: (s.status.value, s.status_reason) for s in final.stages if s.parent_stage_id
    }
    assert instances == {
        "each[0]": ("CANCELED", "straggler"),
        "each[1]": ("SUCCEEDED", None),
        "each[2]": ("CANCELED", "straggler"),
        "each[3]": ("SUCCEEDED", None),
    }
    wait_until(lambda: len(log.of("left")) == 2, "the stragglers to notice the cancel")
    assert sorted(log.of("left")) == [("left", "each[0]", True), ("left", "each[2]", True)]
    assert ran(log) == ["after"]


def test_fan_out_over_an_empty_list_and_over_a_non_list(make_engine: MakeEngine) -> None:
    engine = make_engine(config=config())
    empty = workflow(
        stage("each", "noop", context={"items": []}, mi_config=MultiInstanceConfig("items")),
        stage("after", "noop", ["each"]),
    )
    final = engine.run(empty)
    assert final.status is S.SUCCEEDED
    assert final.stage_by_ref_id("each").outputs["instances"] == []
    bad = workflow(
        stage("each", "noop", context={"items": "abc"}, mi_config=MultiInstanceConfig("items"))
    )
    final = engine.run(bad)
    assert final.status is S.TERMINAL
    assert final.error is not None
    assert "'items'" in final.error
    assert "str" in final.error
