"""Fixtures of the crash tests: real worker processes on a WAL SQLite file.

``workers`` starts ``worker.py`` processes and kills and reaps every one of them at
teardown. ``chaos_db`` is the database a test works on: it submits workflows from the
test process (with event recording on, so ``workflow.created`` is sequence 1), reads the
execution log the workers append to, queries the file with plain ``sqlite3`` and waits for
conditions with a deadline that only guards against hangs.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from process_support import DEADLINE_S, ProcessTracker, Spawned

from stabilize import (
    Orchestrator,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    Workflow,
)
from stabilize.backends.sqlite import SqliteBackend
from stabilize.events import (
    Event,
    SqliteEventStore,
    configure_event_sourcing,
)

WORKER = Path(__file__).with_name("worker.py")
POLL_S = 0.01


@dataclass(frozen=True)
class Execution:
    """One line of the execution log: a task execution as it started."""

    ref: str
    key: str
    pid: int
    pass_no: int

    @property
    def workflow_id(self) -> str:
        return self.key.split(":", 1)[0]


class Workers(ProcessTracker):
    """Starts worker processes and, at teardown, kills and reaps those still running."""

    def spawn(self, db: ChaosDb, mode: str, *options: str, name: str) -> Spawned:
        """Start ``worker.py DB_URL MODE`` with the database's log and release files."""
        args = [db.url, mode, "--log", str(db.log), "--release", str(db.release), *options]
        return self.start(WORKER, args, name)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Worker processes of one test; every one is killed and reaped at teardown."""
    tracker = Workers(tmp_path)
    try:
        yield tracker
    finally:
        tracker.close()


class ChaosDb:
    """A fresh WAL SQLite file, the workers' execution log and the files that steer them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "stabilize.db"
        self.url = f"sqlite:///{self.path}"
        self.log = directory / "executions.log"
        self.release = directory / "release"
        self.stop = directory / "stop"
        self.log.touch()
        self.events = SqliteEventStore(self.url, create_tables=True)
        configure_event_sourcing(self.events)
        self.store = SqliteWorkflowStore(self.url)
        self.queue = SqliteQueue(self.url)
        self.orchestrator = Orchestrator(self.queue, store=self.store)
        assert isinstance(self.store.backend, SqliteBackend)
        assert self.store.backend.journal_mode == "WAL"

    def close(self) -> None:
        configure_event_sourcing()
        self.events.close()
        self.store.backend.close()

    # -- submitting ---------------------------------------------------------------------

    def submit(self, workflow: Workflow) -> Workflow:
        """Store and start a workflow (its StartWorkflow message is queued)."""
        self.store.store(workflow)
        self.orchestrator.start(workflow)
        return workflow

    # -- observing ------------------------------------------------------------------------

    def executions(self) -> list[Execution]:
        """The execution log so far, in append order."""
        lines = self.log.read_text().splitlines()
        result = []
        for line in lines:
            ref, key, pid, pass_no = line.split("\t")
            result.append(Execution(ref, key, int(pid), int(pass_no)))
        return result

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read query on a connection of its own (the file is in WAL mode)."""
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()

    def status(self, workflow_id: str) -> str:
        return str(self.query("SELECT status FROM workflows WHERE id = ?", (workflow_id,))[0][0])

    def recorded(self, workflow_id: str) -> list[Event]:
        """The recorded events of a workflow."""
        return self.events.get_events(workflow_id)

    def event_sequences(self, workflow_id: str) -> list[int]:
        return [e.sequence for e in self.recorded(workflow_id)]

    def wait_until(
        self,
        condition: Callable[[], bool],
        what: str,
        *,
        alive: Sequence[Spawned] = (),
        timeout: float = DEADLINE_S,
    ) -> None:
        """Poll ``condition`` until it holds; fail if the deadline passes or a worker dies."""
        deadline = time.monotonic() + timeout
        while not condition():
            for worker in alive:
                if worker.proc.poll() is not None:
                    raise AssertionError(
                        f"waiting for {what}: {worker.name} exited with "
                        f"{worker.proc.returncode}\n{worker.output()}"
                    )
            if time.monotonic() > deadline:
                outputs = "\n".join(w.output() for w in alive)
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{outputs}")
            time.sleep(POLL_S)


@pytest.fixture
def chaos_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChaosDb]:
    """A fresh WAL database under ``tmp_path`` with event recording on in this process."""
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")
    db = ChaosDb(tmp_path)
    try:
        yield db
    finally:
        db.close()


def linear_workflow(kinds: Sequence[tuple[str, str]], name: str = "chaos") -> Workflow:
    """A chain of one-task stages given as ``(ref, task type)``, each after the previous."""
    stages = []
    previous: set[str] = set()
    for ref, kind in kinds:
        stages.append(
            StageExecution(
                ref_id=ref,
                type=kind,
                name=ref,
                requisite_stage_ref_ids=set(previous),
                tasks=[TaskExecution.create(ref, kind, stage_start=True, stage_end=True)],
            )
        )
        previous = {ref}
    return Workflow.create(application="chaos", name=name, stages=stages)


@pytest.fixture
def make_chain() -> Callable[..., Workflow]:
    """Build a linear workflow of ``(ref, task type)`` stages (see :func:`linear_workflow`)."""
    return linear_workflow
