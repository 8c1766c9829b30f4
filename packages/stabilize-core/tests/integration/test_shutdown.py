"""Graceful shutdown of a real worker process on SIGTERM (install_shutdown_handlers)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from stabilize import (
    LifecycleManager,
    QueueProcessorConfig,
    StageExecution,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
    get_lifecycle_manager,
    install_shutdown_handlers,
    set_lifecycle_manager,
)
from stabilize.lifecycle import FORCED_EXIT_STATUS

S = WorkflowStatus
WORKER = Path(__file__).with_name("shutdown_worker.py")

# SQLite only: the worker script serves a WAL SQLite file; what is under test is signal
# handling and lease release, which go through the backend interface.
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def wal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes share the file: WAL in this process too (set before it is opened)."""
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")


def chain() -> Workflow:
    return Workflow.create(
        application="tests",
        name="shutdown",
        stages=[
            StageExecution(ref_id="first", name="first", tasks=[TaskExecution.create("h", "hold")]),
            StageExecution(
                ref_id="second",
                name="second",
                requisite_stage_ref_ids={"first"},
                tasks=[TaskExecution.create("h", "hold")],
            ),
        ],
    )


def start_worker(engine: Any, workers: Any, tmp_path: Path, timeout: float) -> Any:
    started, release = tmp_path / "started", tmp_path / "release"
    args = [engine.url, "--started", str(started), "--release", str(release)]
    proc = workers.spawn(WORKER, [*args, "--timeout", str(timeout)])
    # This process's worker (used later) finishes at once.
    engine.registry.register("hold", lambda stage: TaskResult.success({"by": "other"}))
    wf = chain()
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    workers.wait_until(lambda: started.exists(), "the first task to start")
    return proc, wf, release


@sqlite_only
def test_sigterm_lets_the_running_task_commit_claims_nothing_and_exits_0(
    make_engine: Any, workers: Any, tmp_path: Path
) -> None:
    engine = make_engine()
    proc, wf, release = start_worker(engine, workers, tmp_path, timeout=60)
    proc.send_signal(signal.SIGTERM)
    # The handler hands the shutdown to a thread: release the task once it stopped claiming.
    err = workers.started[-1].err_path
    workers.wait_until(lambda: "no new work is claimed" in err.read_text(), "the stop request")
    release.touch()
    assert proc.wait(timeout=30) == 0, workers.errors()

    stages = {s.ref_id: s for s in engine.store.retrieve(wf.id).stages}
    assert stages["first"].status is S.SUCCEEDED
    assert stages["first"].outputs == {"pid": proc.pid}
    # The next stage's task was not run by the stopping worker; its message waits,
    # unleased, for another worker.
    assert (tmp_path / "started").read_text().split() == ["first"]
    assert engine.query("SELECT kind, lease_until FROM queue_messages") == [("RunTask", None)]

    engine.processor.process_all(timeout=10)
    done = engine.store.retrieve(wf.id)
    assert done.status is S.SUCCEEDED
    assert done.stages[1].outputs == {"by": "other"}


@sqlite_only
@pytest.mark.parametrize("second_signal", [True, False])
def test_second_sigterm_or_the_timeout_releases_the_leases_for_another_worker(
    make_engine: Any, workers: Any, tmp_path: Path, second_signal: bool
) -> None:
    engine = make_engine()
    proc, wf, _ = start_worker(engine, workers, tmp_path, timeout=600 if second_signal else 0.2)
    proc.send_signal(signal.SIGTERM)
    if second_signal:
        # Two signals sent at once may be delivered as one: wait for the first.
        err = workers.started[-1].err_path
        workers.wait_until(lambda: "SIGTERM: stopping" in err.read_text(), "the first signal")
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == FORCED_EXIT_STATUS, workers.errors()

    # Leases are ten minutes long: the message is free now because it was released.
    engine.processor.process_all(timeout=10)
    done = engine.store.retrieve(wf.id)
    assert done.status is S.SUCCEEDED
    assert [s.outputs for s in done.stages] == [{"by": "other"}, {"by": "other"}]


def test_manager_in_process_stops_registered_processors_and_runs_callbacks(
    make_engine: Any,
) -> None:
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10))
    manager = LifecycleManager(shutdown_timeout=5)
    calls: list[str] = []
    manager.register_processor(engine.processor)
    manager.on_shutdown(lambda: calls.append("done"))
    previous = get_lifecycle_manager()
    try:
        set_lifecycle_manager(manager)
        assert get_lifecycle_manager() is manager
        engine.processor.start()
        assert engine.processor.is_running
        manager.request_shutdown()
        assert manager.wait_for_shutdown(timeout=30)
        assert not engine.processor.is_running
        assert calls == ["done"]
        assert manager.is_shutdown_requested
        assert not manager.is_shutdown_in_progress
    finally:
        set_lifecycle_manager(previous)


def test_install_shutdown_handlers_installs_and_uninstalls() -> None:
    before = signal.getsignal(signal.SIGTERM)
    manager = install_shutdown_handlers(shutdown_timeout=1)
    try:
        assert get_lifecycle_manager() is manager
        assert signal.getsignal(signal.SIGTERM) == manager._handle_signal
    finally:
        manager.uninstall_handlers()
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(ValueError, match="shutdown_timeout must be >= 0, got -1"):
        LifecycleManager(shutdown_timeout=-1)
