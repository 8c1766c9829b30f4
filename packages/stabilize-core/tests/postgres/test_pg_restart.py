"""Faults: the database server restarts while worker processes run.

The shared test server must not be restarted (other tests use it), so this module starts a
throwaway PostgreSQL instance of its own (``initdb`` into a temporary directory, a free
port, trust authentication) and restarts that one.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from stabilize import (
    Orchestrator,
    PostgresQueue,
    PostgresWorkflowStore,
    StageExecution,
    TaskExecution,
    Workflow,
    WorkflowStatus,
)
from stabilize.backends.postgres import PostgresBackend
from stabilize.events import PostgresEventStore, configure_event_sourcing

pytestmark = [pytest.mark.postgres, pytest.mark.chaos]

WORKER = Path(__file__).with_name("pg_restart_worker.py")
SLOTS = 2 * 4  # two worker processes, max_workers=4 each
HANG_GUARD = 40.0
"""Seconds to wait for the workers to finish (guards hangs only)."""


# -- a throwaway PostgreSQL server ------------------------------------------------------


def _find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (or the one on PATH) with initdb."""
    versions = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    versions.sort(key=lambda bindir: int(bindir.parent.name) if bindir.parent.name.isdigit() else 0)
    if versions:
        return versions[-1]
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A PostgreSQL cluster in a temporary directory, run as the ``postgres`` OS user."""

    bindir: Path
    root: Path
    port: int
    prefix: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, tool: str, *args: str) -> None:
        proc = subprocess.run(
            [*self.prefix, str(self.bindir / tool), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            server_log = self.root / "server.log"
            tail = server_log.read_text()[-2000:] if server_log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {proc.stderr}\n{tail}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "30", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


@pytest.fixture
def pg_server() -> Iterator[PgServer]:
    """A fresh PostgreSQL server of this test alone; stopped and deleted at teardown."""
    bindir = _find_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) to start a throwaway server")
    prefix: list[str] = []
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser: cannot run initdb as 'postgres'")
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' OS user to run initdb")
        prefix = [runuser, "-u", "postgres", "--"]
        owner = (entry.pw_uid, entry.pw_gid)
    root = Path(tempfile.mkdtemp(prefix="stabilize-pg-"))
    if owner is not None:
        os.chown(root, *owner)
    server = PgServer(bindir, root, _free_port(), prefix)
    try:
        server.run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "--no-sync")
        server.start()
        yield server
    finally:
        for key, backend in list(PostgresBackend._instances.items()):
            if f":{server.port}/" in key[0]:
                backend.close()
        if (server.data / "postmaster.pid").exists():
            try:
                server.stop("immediate")
            except Exception as exc:  # teardown must still remove the directory
                print(f"could not stop the throwaway server: {exc}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


# -- the test ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of the execution log: a task's start or end, or a marker of the test."""

    what: str
    workflow: str = ""
    ref: str = ""
    key: str = ""
    pid: int = 0


class ExecutionLog:
    """The file the workers log task executions to, and the test its outage markers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def mark(self, what: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"{what}\n".encode())
        finally:
            os.close(fd)

    def lines(self) -> list[Line]:
        out = []
        for raw in self.path.read_text().splitlines():
            parts = raw.split("\t")
            if len(parts) == 5:
                out.append(Line(parts[0], parts[1], parts[2], parts[3], int(parts[4])))
            elif len(parts) == 1:
                out.append(Line(parts[0]))
            # a partial last line (a write in progress) is read again next time
        return out

    def count(self, what: str, ref: str) -> int:
        return sum(1 for line in self.lines() if line.what == what and line.ref == ref)


def chain(i: int, gates: dict[str, Path]) -> Workflow:
    """a -> b -> c; the tasks of b and c wait for their gate file."""
    stages = []
    for ref, up in (("a", None), ("b", "a"), ("c", "b")):
        context = {"gate": str(gates[ref])} if ref in gates else {}
        stages.append(
            StageExecution(
                ref_id=ref,
                type="step",
                name=ref,
                context=context,
                requisite_stage_ref_ids={up} if up else set(),
                tasks=[TaskExecution.create(ref, "step")],
            )
        )
    return Workflow.create(application="tests", name=f"restart_{i}", stages=stages)


def query(url: str, text: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(text.encode()).fetchall())


def test_workers_reconnect_when_the_database_restarts_and_lose_no_transition(
    pg_server: PgServer, tmp_path: Path, poll: Callable[..., None]
) -> None:
    url = pg_server.create_database("restart")
    log = ExecutionLog(tmp_path / "executions.log")
    gates = {"b": tmp_path / "gate_b", "c": tmp_path / "gate_c"}
    configure_event_sourcing(PostgresEventStore(url))  # workflow.created is sequence 1
    store = PostgresWorkflowStore(url)
    orchestrator = Orchestrator(PostgresQueue(url), store)
    workflows = [chain(i, gates) for i in range(20)]
    for wf in workflows:
        orchestrator.start(wf)
    store.backend.close()  # the test reads through connections of its own from here on

    errs = [tmp_path / f"worker{n}.err" for n in range(2)]
    env = {k: v for k, v in os.environ.items() if k != "STABILIZE_DISABLE_PLUGIN_AUTOLOAD"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for err in errs:
            with err.open("wb") as sink:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), url, str(log.path), "--lease", "5"],
                        stdout=subprocess.DEVNULL,
                        stderr=sink,
                        env=env,
                    )
                )

        # Outage 1: every slot runs a task of stage b when the server goes down; the tasks
        # return during the outage, so their results cannot be committed.
        poll(lambda: log.count("start", "b") == SLOTS, "every slot to run a 'b' task")
        log.mark("down")
        pg_server.stop("fast")
        gates["b"].touch()

        def both_noticed() -> bool:
            return all("database error" in err.read_text() for err in errs)

        poll(lambda: log.count("end", "b") == SLOTS, "the 'b' tasks to return")
        poll(both_noticed, "both workers to hit the dead server")
        pg_server.start()
        log.mark("up")

        # Outage 2: the server crashes (immediate shutdown) while results of stage c are
        # being committed. Eight c tasks running at once means both workers carried on.
        poll(lambda: log.count("start", "c") == SLOTS, "every slot to run a 'c' task")
        carried_on = {line.pid for line in log.lines() if line.what == "start" and line.ref == "c"}
        log.mark("down")
        gates["c"].touch()
        pg_server.stop("immediate")
        pg_server.start()
        log.mark("up")

        codes = [proc.wait(timeout=HANG_GUARD) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    stderr = "\n".join(err.read_text() for err in errs)
    assert codes == [0, 0], stderr
    assert carried_on == {proc.pid for proc in procs}

    # Every workflow finished, and nothing is left to do.
    statuses = dict(query(url, "SELECT id, status FROM workflows"))
    assert statuses == {wf.id: WorkflowStatus.SUCCEEDED.value for wf in workflows}
    assert query(url, "SELECT count(*) FROM queue_messages") == [(0,)]
    assert query(url, "SELECT count(*) FROM dead_letters") == [(0,)]

    # Every task ran, always under one idempotency key; a task ran again only when it was
    # running or finishing across an outage (its first run started before the server came
    # back, the next one after it went down).
    lines = log.lines()
    runs: dict[tuple[str, str], list[int]] = defaultdict(list)
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for index, line in enumerate(lines):
        if line.what == "start":
            runs[(line.workflow, line.ref)].append(index)
            keys[(line.workflow, line.ref)].add(line.key)
    assert set(runs) == {(wf.id, ref) for wf in workflows for ref in "abc"}
    assert all(len(k) == 1 for k in keys.values())
    downs = [i for i, line in enumerate(lines) if line.what == "down"]
    ups = [i for i, line in enumerate(lines) if line.what == "up"]
    assert len(downs) == len(ups) == 2
    for task, starts in runs.items():
        if len(starts) > 1:
            assert len(starts) == 2, task
            assert any(
                starts[0] < up and starts[1] > down for down, up in zip(downs, ups, strict=True)
            ), task

    # Each stage kept the result of a run (never done without its result).
    store = PostgresWorkflowStore(url)
    for wf in workflows:
        stored = store.retrieve(wf.id)
        for stage in stored.stages:
            assert stage.outputs[stage.ref_id] == next(iter(keys[(wf.id, stage.ref_id)]))

    # No transition lost or applied twice: per workflow, event sequences run 1..n and each
    # stage completed exactly once.
    events: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    recorded_log = PostgresEventStore(url)
    for wf in workflows:
        for event in recorded_log.get_events(wf.id):
            events[wf.id].append((event.sequence, event.event_type, event.entity_id))
    event_seq = dict(query(url, "SELECT id, event_seq FROM workflows"))
    for wf in workflows:
        log_of = events[wf.id]
        assert [seq for seq, _, _ in log_of] == list(range(1, len(log_of) + 1)), wf.id
        assert event_seq[wf.id] == len(log_of)
        kinds = Counter(kind for _, kind, _ in log_of)
        assert kinds["workflow.created"] == kinds["workflow.completed"] == 1
        completed = Counter(entity for _, kind, entity in log_of if kind == "stage.completed")
        assert completed == Counter(stage.id for stage in wf.stages)
