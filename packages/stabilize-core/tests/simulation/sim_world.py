"""The simulated world: real processors on a real database, driven by a seeded scheduler.

The database is a SQLite file, or a PostgreSQL schema. Nothing runs on its own. The
scheduler draws, at each tick, one of the actions enabled at that point: a worker takes a
step (commits what its tasks finished, claims and dispatches), a dispatched task runs, a
worker crashes, the clock jumps past every lease, a workflow or a stage is canceled, a
workflow is paused or resumed, a stage gets a signal before it waits for one. When nothing
can happen before the clock moves, the clock moves to the next due message or lease
expiry. Everything that could vary between two runs is fixed: the clock is the
simulation's, tasks run when the scheduler says (on its thread), the processors' timers
run every step (interval 0) or never, and ids come from the seed.

Faults are injected at the edges only:
- database errors: the backend the processors use is a thin wrapper around the real one
  whose ``transaction()`` and ``read()`` raise the dialect's transient error at seeded
  points (before the transaction, before its commit so that it rolls back, or after a
  commit as a lost acknowledgement would);
- crashes: a worker is dropped with its in-memory state (claimed messages, results not
  yet committed); its leases stay in the database, and a new processor with a new owner
  takes its place (and sometimes runs recovery at once);
- lease expiry: the clock jumps past the lease, so work in flight is delivered again to
  whoever claims it next (a duplicate delivery when the first worker still commits).
"""

from __future__ import annotations

import logging
import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from simulation.sim_workflows import Plan, generate, registry

from stabilize import Orchestrator, QueueProcessor, QueueProcessorConfig, StageExecution, Workflow
from stabilize.backends._base import Backend, Transaction
from stabilize.backends.sqlite import SqliteBackend
from stabilize.errors import SignalError
from stabilize.events import EventStore
from stabilize.models.status import WorkflowStatus
from stabilize.queue import Queue
from stabilize.queue.processor._processor import _live
from stabilize.queue.processor._runner import InFlight, Runner

S = WorkflowStatus
LEASE_S = 30.0
"""Lease of a claimed message; the clock jumps past it to force redelivery."""
START_S = 1_700_000_000.0
"""Where the simulation's clock starts (2023-11-14), an ordinary time: nothing the engine
queues may be stamped with the wall clock."""
MAX_TICKS = 20_000
REPLAY = (
    "uv run pytest packages/stabilize-core/tests/simulation -p no:cacheprovider --sim-seed {seed}"
)


KNOWN_BUGS: dict[str, str] = {}
"""Engine bugs the simulation found that are not fixed yet (processor and task code).

A run counts what they do apart (``World.known``); ``strict`` runs count them as
violations (the skipped tests in test_simulation.py, to un-skip once fixed).
"""


class InjectedError(sqlite3.OperationalError):
    """The error a fault point raises: SQLite's own transient error ("database is locked")."""


class SimClock:
    """Seconds since the epoch; moves only when the scheduler says so."""

    def __init__(self) -> None:
        self.now = START_S

    def __call__(self) -> float:
        return self.now

    def advance_to_ms(self, ms: int) -> None:
        self.now = max(self.now, ms / 1000)


@dataclass
class Stats:
    """What one simulated run did (summed over runs for the report)."""

    runs: int = 0
    workflows: int = 0
    ticks: int = 0
    executions: int = 0
    crashes: int = 0
    db_errors: int = 0
    lease_expiries: int = 0
    duplicates: int = 0
    cancels: int = 0
    signals: int = 0
    pauses: int = 0
    fan_outs: int = 0
    sub_workflows: int = 0
    known_bug_hits: int = 0

    def add(self, other: Stats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Faults:
    """Where database errors strike: a seeded draw per transaction."""

    def __init__(self, rng: random.Random, rate: float, stats: Stats) -> None:
        self.rng = rng
        self.rate = rate
        self.stats = stats
        self.armed = True

    def draw(self, points: tuple[str, ...]) -> str | None:
        if not self.armed or self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        self.stats.db_errors += 1
        return self.rng.choice(points)


def injected(backend: Backend, where: str) -> Exception:
    """The transient error of ``backend``'s dialect, as its driver raises it."""
    if backend.dialect == "postgres":
        import psycopg

        return psycopg.errors.SerializationFailure(f"could not serialize access ({where})")
    return InjectedError(f"database is locked ({where})")


class FaultyBackend(Backend):
    """The real backend behind a wrapper that fails transactions at seeded points."""

    def __init__(self, real: Backend, faults: Faults) -> None:
        super().__init__()
        self.dialect = real.dialect
        self.real = real
        self.faults = faults
        self.cache = real.cache
        self.lock = real.lock
        self.registries = real.registries
        self.last_touched: set[str] = set()
        """Workflows the last transaction committed through this wrapper changed."""

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        point = self.faults.draw(("begin", "rollback", "after_commit"))
        if point == "begin":
            raise injected(self.real, "injected before the transaction")
        with self.real.transaction() as tx:
            yield tx
            if point == "rollback":
                raise injected(self.real, "injected before the commit")
            touched = set(tx.touched)
        self.last_touched = touched
        if point == "after_commit":
            raise injected(self.real, "injected after the commit")

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        if self.faults.draw(("read",)) is not None:
            raise injected(self.real, "injected before a read")
        with self.real.read() as tx:
            yield tx

    def own_event_store(self) -> EventStore:
        return self.real.own_event_store()

    def event_table_prefix(self) -> str | None:
        return self.real.event_table_prefix()

    def is_transient_error(self, exc: BaseException) -> bool:
        return self.real.is_transient_error(exc)

    def close(self) -> None:
        """The real backend is closed by the world."""

    @property
    def location(self) -> str:
        return self.real.location


@dataclass
class Execution:
    """One run of a task's user code, as the task recorded it when it started."""

    tick: int
    worker: int
    workflow_id: str
    stage_id: str
    task_id: str
    run: int
    """The task's version: which run of it (a loop or a signal starts a new one)."""
    retry: int
    key: str
    """The idempotency key the task received."""


class SteppedRunner(Runner):
    """A runner whose tasks run only when the scheduler says, on the scheduler's thread."""

    def __init__(self, world: World, worker: Worker) -> None:
        super().__init__(1, "sim")
        self.world = world
        self.worker = worker
        self.pending: list[InFlight] = []

    def submit(self, flight: InFlight, timeout: timedelta | None) -> None:
        flight.timeout = timeout.total_seconds() if timeout is not None else None
        self.world.check_dispatch(flight)
        self.pending.append(flight)

    def run_one(self, index: int) -> None:
        flight = self.pending.pop(index)
        if flight.abandoned:
            return  # the processor settled it already (canceled)
        self.world.running = self.worker
        # Tasks that use the database themselves (SubWorkflowTask) see its errors too,
        # unless the run says otherwise.
        self.world.faults.armed = self.world.faults_in_tasks
        try:
            self._run_sync(flight)
        finally:
            self.world.running = None
            self.world.faults.armed = True


class Worker:
    """One simulated worker: a real ``QueueProcessor`` with a stepped runner."""

    def __init__(self, world: World, number: int) -> None:
        self.number = number
        queue = Queue(world.faulty, lock_duration=timedelta(seconds=LEASE_S), max_attempts=1000)
        self.proc = QueueProcessor(
            queue, world.config, task_registry=world.registry, clock=world.clock
        )
        self.proc._random = random.Random(world.rng.random())
        self.runner = SteppedRunner(world, self)
        self.proc._runner = self.runner

    def discard(self) -> None:
        """Forget this worker as a crash does: nothing it holds in memory is committed."""
        _live.discard(self.proc)
        self.proc._runner = None
        self.runner.pending.clear()
        self.runner.shutdown(wait=True)


@dataclass
class World:
    """One simulated run: its seed decides everything."""

    seed: int
    directory: Path
    workflows_per_run: int = 4
    strict: bool = False
    """Count the known engine bugs (KNOWN_BUGS) as violations too."""
    faults_in_tasks: bool = True
    """Inject database errors into what tasks do with the database as well."""
    postgres: tuple[str, str] | None = None
    """Run on this PostgreSQL (URL, schema) instead of a SQLite file in ``directory``."""
    rng: random.Random = field(init=False)
    stats: Stats = field(default_factory=Stats)
    trace: list[str] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    """What a known engine bug (KNOWN_BUGS) did in this run, reported apart."""
    plans: list[Plan] = field(default_factory=list)
    canceled: set[str] = field(default_factory=set)
    """Workflows the simulation canceled, or one of whose stages (their outcome is open)."""
    paused: set[str] = field(default_factory=set)
    signaled: set[tuple[str, str]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    running: Worker | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        rng = self.rng
        self.clock = SimClock()
        self.real: Backend
        if self.postgres is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.real = SqliteBackend.for_url(f"sqlite:///{self.directory / f'sim_{self.seed}.db'}")
        else:
            from stabilize.backends.postgres import PostgresBackend

            self.real = PostgresBackend.for_url(*self.postgres)
        self.events = self.real.own_event_store()
        self.db_error_rate = rng.choice([0.0, 0.02, 0.05, 0.1])
        self.crash_weight = rng.choice([0.0, 0.05, 0.2])
        self.expiry_weight = rng.choice([0.0, 0.02, 0.08])
        self.cancel_weight = rng.choice([0.0, 0.0, 0.01])
        self.control_weight = rng.choice([0.0, 0.02, 0.05])
        self.faults = Faults(random.Random(rng.random()), self.db_error_rate, self.stats)
        self.faulty = FaultyBackend(self.real, self.faults)
        self.config = QueueProcessorConfig(
            max_workers=rng.choice([1, 1, 2, 3]),
            claim_batch_size=rng.choice([1, 2, 64]),
            lease_duration_seconds=LEASE_S,
            enable_lock_heartbeat=False,
            cancel_check_interval_seconds=0,
            progress_flush_interval_seconds=0,
            recovery_interval_seconds=0,
            transient_max_attempts=rng.choice([2, 3, 5]),
            transient_jitter=0.0,
            default_poll_seconds=1.0,
        )
        self.registry = registry(self.record)
        self.orchestrator = Orchestrator(Queue(self.real), clock=self.clock)
        self.workers = [Worker(self, i) for i in range(rng.choice([1, 2, 2, 3]))]
        self._next_worker = len(self.workers)

    # -- what tasks and processors report ------------------------------------------------

    def record(self, stage: StageExecution) -> None:
        """Called by every task when it starts (its side effect, kept across crashes)."""
        running = [t for t in stage.tasks if t.status is S.RUNNING]
        task = running[0]
        worker = self.running.number if self.running is not None else -1
        wf = stage.execution
        self.executions.append(
            Execution(
                len(self.trace),
                worker,
                wf.id,
                stage.id,
                task.id,
                task.version,
                task.retry_count,
                stage.idempotency_key,
            )
        )
        self.stats.executions += 1

    def check_dispatch(self, flight: InFlight) -> None:
        """A task handed to user code must be RUNNING, in this run, in the database."""
        with self.real.read() as tx:
            wf = tx.read_workflow(flight.msg.workflow_id)
        where = (
            f"tick {len(self.trace)}: dispatched task {flight.task_id} (message {flight.msg.id})"
        )
        if wf is None:
            self.violations.append(f"{where}: its workflow is gone")
            return
        stage = wf.index.by_id.get(flight.stage.id)
        task = next((t for t in stage.tasks if t.id == flight.task_id), None) if stage else None
        run = flight.msg.payload.get("run")
        if task is None or task.status is not S.RUNNING or task.version != run:
            state = None if task is None else (task.status.value, task.version)
            self.violations.append(f"{where}: stored task is {state}, message is for run {run}")
        elif task.retry_count != flight.retry_count:
            self.violations.append(
                f"{where}: stored retry {task.retry_count}, dispatched as {flight.retry_count}"
            )

    # -- the run -------------------------------------------------------------------------

    def submit_all(self) -> None:
        for i in range(self.workflows_per_run):
            plan = generate(self.rng, f"w{self.seed}x{i}", self.config.transient_max_attempts)
            self.plans.append(plan)
            self.orchestrator.start(plan.workflow)
            self.stats.workflows += 1
            self.stats.fan_outs += plan.fan_outs
            self.stats.sub_workflows += plan.sub_workflows

    def run(self) -> None:
        """Drive every workflow to its end (or give up after ``MAX_TICKS``)."""
        self.stats.runs += 1
        self.submit_all()
        quiet: set[int] = set()
        while len(self.trace) < MAX_TICKS:
            actions = self._actions(quiet)
            if not actions:
                if not self._idle():
                    return
                quiet.clear()
                continue
            weights = [w for _, w, _ in actions]
            name, _, act = self.rng.choices(actions, weights)[0]
            self.trace.append(name)
            if act():
                quiet.clear()
        self.violations.append(f"the run did not end within {MAX_TICKS} scheduler ticks")

    def _actions(self, quiet: set[int]) -> list[tuple[str, float, Any]]:
        actions: list[tuple[str, float, Any]] = []
        for worker in self.workers:
            if worker.number not in quiet or worker.runner.pending:
                actions.append((f"step {worker.number}", 4.0, self._stepper(worker, quiet)))
            for i, flight in enumerate(worker.runner.pending):
                actions.append(
                    (f"run {worker.number} {flight.msg.id}", 3.0, self._runner_of(worker, i))
                )
        if not actions:
            return actions
        for worker in self.workers:
            if self.crash_weight:
                actions.append((f"crash {worker.number}", self.crash_weight, self._crasher(worker)))
        if self.expiry_weight:
            actions.append(("expire leases", self.expiry_weight, self._expire))
        if self.cancel_weight:
            actions.append(("cancel", self.cancel_weight, self._cancel))
            actions.append(("cancel stage", self.cancel_weight, self._cancel_stage))
        if self.control_weight:
            actions.append(("pause", self.control_weight, self._pause))
            actions.append(("early signal", self.control_weight, self._early_signal))
        if self.paused:
            actions.append(("resume", 0.5, self._resume))
        return actions

    def _stepper(self, worker: Worker, quiet: set[int]) -> Any:
        def step() -> bool:
            try:
                moved = worker.proc.process_one()
            except Exception as exc:
                if not worker.proc.backend.is_transient_error(exc):
                    raise
                return True  # not quiet: what failed is retried on the next step
            if not moved and not worker.runner.pending:
                quiet.add(worker.number)
            return moved

        return step

    def _runner_of(self, worker: Worker, index: int) -> Any:
        def run() -> bool:
            worker.runner.run_one(index)
            return True

        return run

    def _crasher(self, worker: Worker) -> Any:
        def crash() -> bool:
            self.stats.crashes += 1
            worker.discard()
            fresh = Worker(self, self._next_worker)
            self._next_worker += 1
            self.workers[self.workers.index(worker)] = fresh
            if self.rng.random() < 0.5:
                try:
                    fresh.proc.run_recovery()  # a restarted worker frees its dead leases
                except Exception as exc:
                    if not self.real.is_transient_error(exc):
                        raise
            return True

        return crash

    def _expire(self) -> bool:
        self.stats.lease_expiries += 1
        self.clock.now += LEASE_S + 1
        return True

    def _cancel(self) -> bool:
        live = [p.workflow.id for p in self.plans if p.workflow.id not in self.canceled]
        if not live:
            return False
        target = self.rng.choice(live)
        self.canceled.add(target)
        self.stats.cancels += 1
        self.orchestrator.cancel(target, user="sim", reason="canceled by the simulation")
        return True

    def _cancel_stage(self) -> bool:
        plan = self.rng.choice(self.plans)
        stage = self.rng.choice(plan.workflow.stages)
        self.canceled.add(plan.workflow.id)
        self.stats.cancels += 1
        self.trace.append(f"cancel stage {plan.workflow.id} {stage.ref_id}")
        self.orchestrator.cancel_stage(plan.workflow.id, stage.ref_id, user="sim")
        return True

    def _pause(self) -> bool:
        target = self.rng.choice(self.plans).workflow.id
        if target in self.paused:
            return False
        self.paused.add(target)
        self.stats.pauses += 1
        self.trace.append(f"pause {target}")
        self.orchestrator.pause(target)
        return True

    def _resume(self) -> bool:
        target = sorted(self.paused)[0]
        self.paused.discard(target)
        self.trace.append(f"resume {target}")
        self.orchestrator.resume(target)
        return True

    def _early_signal(self) -> bool:
        """A persistent signal to a stage that has not suspended (yet): it is kept for it."""
        candidates = sorted(
            (p.workflow.id, ref)
            for p in self.plans
            for ref in p.signals
            if (p.workflow.id, ref) not in self.signaled
        )
        if not candidates:
            return False
        workflow_id, ref = self.rng.choice(candidates)
        self.signaled.add((workflow_id, ref))
        self.trace.append(f"early signal {workflow_id} {ref}")
        try:
            self.orchestrator.signal(workflow_id, ref, "early", persistent=True)
        except SignalError:
            return False  # the stage (or its workflow) has finished: refused, nothing changed
        self.stats.signals += 1
        return True

    def _idle(self) -> bool:
        """Nothing can happen now: move the clock, or signal a waiting stage; False: done."""
        if self.paused:
            return self._resume()
        with self.real.read() as tx:
            tx.cur.execute("SELECT deliver_at, lease_until FROM queue_messages")
            rows = tx.cur.fetchall()
        if rows:
            due = min(max(d, (u + 1) if u is not None else 0) for d, u in rows)
            now_ms = int(self.clock.now * 1000)
            if due <= now_ms:
                self.violations.append(
                    f"tick {len(self.trace)}: every worker is idle but a message is due"
                )
                return False
            self.trace.append(f"clock -> {due}")
            self.clock.advance_to_ms(due)
            return True
        waiting = self._suspended()
        if not waiting:
            return False
        workflow_id, ref = waiting[0]
        self.trace.append(f"signal {workflow_id} {ref}")
        self.stats.signals += 1
        self.orchestrator.signal(workflow_id, ref, "go", {"tick": len(self.trace)})
        return True

    def _suspended(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        with self.real.read() as tx:
            for plan in self.plans:
                wf = tx.read_workflow(plan.workflow.id)
                assert wf is not None
                if wf.status.is_complete:
                    continue
                found.extend((wf.id, s.ref_id) for s in wf.stages if s.status is S.SUSPENDED)
        return found

    def stored(self, workflow_id: str) -> Workflow:
        with self.real.read() as tx:
            wf = tx.read_workflow(workflow_id)
        assert wf is not None
        return wf

    def close(self) -> None:
        for worker in self.workers:
            worker.discard()
        self.real.close()


class ErrorLog(logging.Handler):
    """Collects what the engine logs at ERROR or above: each is an engine failure."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")
