"""Worker processes on one PostgreSQL schema: draining together, and surviving SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stabilize import (
    Orchestrator,
    PostgresQueue,
    PostgresWorkflowStore,
    StageExecution,
    TaskExecution,
    Workflow,
)

pytestmark = pytest.mark.postgres

WORKER = Path(__file__).with_name("pg_worker.py")
Key = tuple[str, str, int]


def stage(ref: str, task: str, requires: tuple[str, ...] = (), **context: object) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        context=dict(context),
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(ref, task)],
    )


def mixed_workflow(i: int) -> tuple[Workflow, set[tuple[str, int]]]:
    """A linear, fan-out or loop workflow, and the (stage ref, pass) executions it needs."""
    if i % 3 == 0:
        stages = [stage("a", "step"), stage("b", "step", ("a",)), stage("c", "step", ("b",))]
        expected = {("a", 1), ("b", 1), ("c", 1)}
    elif i % 3 == 1:
        stages = [
            stage("root", "step"),
            *(stage(r, "step", ("root",)) for r in ("x", "y", "z")),
            stage("join", "step", ("x", "y", "z")),
        ]
        expected = {(r, 1) for r in ("root", "x", "y", "z", "join")}
    else:
        stages = [
            stage("start", "step"),
            stage("end", "loop", ("start",), loop_to="start", passes=2),
        ]
        expected = {(r, p) for r in ("start", "end") for p in (1, 2)}
    wf = Workflow.create(application="tests", name=f"mp_{i}", stages=stages)
    return wf, expected


def read_log(path: Path) -> list[tuple[Key, int]]:
    """((workflow id, stage ref, pass), pid) per execution."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        wf, ref, passes, pid = line.split("\t")
        rows.append(((wf, ref, int(passes)), int(pid)))
    return rows


class Workers:
    """Worker processes of one test; every one is killed and reaped at teardown."""

    def __init__(self, url: str, schema: str, log: Path) -> None:
        self.url, self.schema, self.log = url, schema, log
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *extra: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != "STABILIZE_DISABLE_PLUGIN_AUTOLOAD"}
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), self.url, self.schema, str(self.log), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = 50) -> tuple[int, str]:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def workers(pg_url: str, pg_schema: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(pg_url, pg_schema, tmp_path / "executions.log")
    yield pool
    pool.close()


def submit(url: str, schema: str, workflows: list[Workflow]) -> PostgresWorkflowStore:
    store = PostgresWorkflowStore(url, schema=schema)
    orchestrator = Orchestrator(PostgresQueue(url, schema=schema), store)
    for wf in workflows:
        orchestrator.start(wf)
    return store


def test_four_worker_processes_drain_200_workflows_exactly_once(pg_url, pg_schema, workers):
    made = [mixed_workflow(i) for i in range(200)]
    store = submit(pg_url, pg_schema, [wf for wf, _ in made])

    procs = [workers.start() for _ in range(4)]
    results = [workers.finish(p, timeout=55) for p in procs]

    assert [rc for rc, _ in results] == [0, 0, 0, 0], [err for _, err in results]
    counts = Counter(key for key, _ in read_log(workers.log))
    expected = {(wf.id, ref, p) for wf, want in made for ref, p in want}
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    assert store.count(status="SUCCEEDED") == 200
    assert PostgresQueue(pg_url, schema=pg_schema).size() == 0


@pytest.mark.chaos
def test_a_killed_worker_s_tasks_are_adopted_and_nothing_committed_repeats(
    pg_url, pg_schema, workers, tmp_path, poll
):
    made = [mixed_workflow(3 * i) for i in range(30)]  # linear: a -> b -> c
    store = submit(pg_url, pg_schema, [wf for wf, _ in made])
    release = tmp_path / "release"
    victim = workers.start("--block", str(release), "--lease", "2")
    survivor = workers.start("--block", str(release), "--lease", "2")

    # Kill the first worker while it runs tasks (they block until the release file exists).
    poll(lambda: any(pid == victim.pid for _, pid in read_log(workers.log)), "a victim task")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    interrupted = {key for key, pid in read_log(workers.log) if pid == victim.pid}
    release.touch()
    rc, err = workers.finish(survivor)
    replacement = workers.start("--lease", "2")  # drains whatever is left, if anything
    rc2, err2 = workers.finish(replacement)

    assert (rc, rc2) == (0, 0), err + err2
    assert interrupted
    counts = Counter(key for key, _ in read_log(workers.log))
    expected = {(wf.id, ref, p) for wf, want in made for ref, p in want}
    assert set(counts) == expected
    repeated = {key for key, n in counts.items() if n > 1}
    assert repeated == interrupted  # only the interrupted tasks ran again, once more
    assert all(counts[key] == 2 for key in repeated)
    assert store.count(status="SUCCEEDED") == 30
