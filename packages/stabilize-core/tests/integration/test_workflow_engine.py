"""WorkflowEngine and the first hour (issue 15): a short first program, failures you can see."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stabilize import (
    PostgresQueue,
    PostgresWorkflowStore,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowEngine,
    WorkflowStatus,
)
from stabilize.errors import DatabaseNotFoundError, UnknownTaskTypeError
from stabilize.events import EventReplayer
from stabilize.queue.processor import ProcessResult, QueueProcessorConfig

S = WorkflowStatus
HANG_GUARD = 30.0


OpenEngine = Callable[..., WorkflowEngine]


@pytest.fixture
def open_engine(backend: Any) -> Iterator[OpenEngine]:
    """``open_engine()``: a WorkflowEngine on the ``backend`` fixture's database."""
    made: list[WorkflowEngine] = []

    def make(**kwargs: Any) -> WorkflowEngine:
        kwargs.setdefault("config", QueueProcessorConfig(poll_frequency_ms=10))
        engine = WorkflowEngine(backend.url, schema=backend.schema, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def hello(*stages: StageExecution) -> Workflow:
    return Workflow.create(application="tests", name="hello", stages=list(stages))


# -- the common case --------------------------------------------------------------------


def test_run_returns_the_finished_workflow(open_engine: OpenEngine) -> None:
    engine = open_engine()

    @engine.task("greet")
    def greet(stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"greeting": f"hello, {stage.context['who']}"})

    done = engine.run(hello(StageExecution.for_task("greet", "greet", context={"who": "you"})))

    assert done.status is S.SUCCEEDED
    assert done.stages[0].outputs == {"greeting": "hello, you"}
    assert done.failure_summary() is None
    assert engine.retrieve(done.id).status is S.SUCCEEDED


def test_bare_decorator_registers_under_the_function_name_and_returns_it(
    open_engine: OpenEngine,
) -> None:
    engine = open_engine()

    @engine.task
    def shout(stage: StageExecution) -> dict[str, Any]:
        return {"loud": stage.context["word"].upper()}

    @engine.task("whisper", aliases=["quiet"])
    async def whisper(stage: StageExecution) -> dict[str, Any]:
        return {"soft": stage.context["word"].lower()}

    assert shout(StageExecution(context={"word": "x"})) == {"loud": "X"}
    assert engine.registry.has("shout")
    assert engine.registry.has("quiet")
    done = engine.run(
        hello(
            StageExecution.for_task("a", "shout", context={"word": "Hi"}),
            StageExecution.for_task(
                "b", "quiet", context={"word": "Ho"}, requisite_stage_ref_ids={"a"}
            ),
        )
    )
    assert done.status is S.SUCCEEDED
    assert [s.outputs for s in done.stages] == [{"loud": "HI"}, {"soft": "ho"}]


def test_start_then_process_runs_it_without_waiting_in_start(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.register("noop_fn", lambda stage: {})
    wf = hello(StageExecution.for_task("n", "noop_fn"))

    engine.start(wf)
    assert engine.retrieve(wf.id).status is S.NOT_STARTED  # stored, queued, not run
    result = engine.process(timeout=HANG_GUARD)

    assert isinstance(result, ProcessResult)
    assert result.finished
    assert engine.retrieve(wf.id).status is S.SUCCEEDED


def test_a_workflow_with_an_unregistered_task_is_refused_by_start(open_engine: OpenEngine) -> None:
    engine = open_engine()
    wf = hello(StageExecution.for_task("m", "missing"))

    with pytest.raises(UnknownTaskTypeError, match=r"stage 'm'.*'missing'.*register it first"):
        engine.start(wf)

    assert engine.store.count() == 0  # nothing written


def test_the_explicit_parts_share_one_database(open_engine: OpenEngine) -> None:
    engine = open_engine()

    assert engine.store.backend is engine.queue.backend is engine.backend
    assert engine.processor.task_registry is engine.registry
    assert engine.processor.store is engine.store
    assert engine.orchestrator.store is engine.store
    assert repr(engine) == f"WorkflowEngine({engine.backend.location!r})"


# -- failures you can see ---------------------------------------------------------------


def test_a_failed_task_is_explained_by_failure_summary(open_engine: OpenEngine) -> None:
    engine = open_engine()

    @engine.task("boom")
    def boom(stage: StageExecution) -> TaskResult:
        raise RuntimeError("the disk is full")

    done = engine.run(hello(StageExecution.for_task("b", "boom")))

    assert done.status is S.TERMINAL
    details = done.stages[0].tasks[0].task_exception_details
    assert details["exception_type"] == "RuntimeError"
    summary = done.failure_summary()
    assert summary is not None
    lines = summary.splitlines()
    assert lines[0] == f"workflow 'hello' ({done.id}) ended TERMINAL"
    assert lines[1] == "  stage 'b' ended TERMINAL"
    assert "task 'b': " in lines[2]
    assert "the disk is full" in lines[2]


def test_a_task_function_returning_none_fails_naming_the_function(open_engine: OpenEngine) -> None:
    engine = open_engine()
    calls: list[str] = []

    @engine.task("save")
    def save(stage: StageExecution) -> None:
        calls.append(stage.ref_id)  # forgot to return

    done = engine.run(hello(StageExecution.for_task("s", "save")))

    assert calls == ["s"]
    assert done.status is S.TERMINAL
    message = done.stages[0].tasks[0].task_exception_details["message"]
    assert "task function 'save' returned None (no return statement?)" in message
    assert "return TaskResult.success() or {}" in message
    assert done.stages[0].outputs == {}


def test_run_raises_timeout_error_when_work_is_still_running(open_engine: OpenEngine) -> None:
    engine = open_engine()
    release = threading.Event()
    started = threading.Event()

    @engine.task("slow")
    def slow(stage: StageExecution) -> dict[str, Any]:
        started.set()
        release.wait(HANG_GUARD)
        return {"done": True}

    wf = hello(StageExecution.for_task("slow", "slow"))
    try:
        with pytest.raises(TimeoutError) as caught:
            engine.run(wf, timeout=0.2)  # the task holds until released below
    finally:
        release.set()
    assert started.is_set()
    message = str(caught.value)
    assert wf.id in message
    assert "still RUNNING after 0.2s" in message
    assert "call process() to go on" in message

    engine.process(timeout=HANG_GUARD)
    assert engine.retrieve(wf.id).status is S.SUCCEEDED


def test_run_returns_a_workflow_that_waits_without_raising(open_engine: OpenEngine) -> None:
    engine = open_engine()
    wf = hello(StageExecution.for_task("w", "wait", context={"waitTime": 3600}))

    waiting = engine.run(wf, timeout=HANG_GUARD)

    assert waiting.status is S.RUNNING  # the next step is due in an hour
    assert waiting.stages[0].status is S.RUNNING


# -- process_all says what it left --------------------------------------------------------


def test_process_all_that_drained_everything_is_finished(open_engine: OpenEngine) -> None:
    engine = open_engine()
    engine.register("one", lambda stage: {})
    engine.start(hello(StageExecution.for_task("a", "one")))

    result = engine.processor.process_all(timeout=HANG_GUARD)

    assert isinstance(result, int)
    assert result > 0
    assert (result.finished, result.timed_out, result.pending, result.running) == (
        True,
        False,
        0,
        0,
    )
    nothing = engine.processor.process_all(timeout=HANG_GUARD)
    assert nothing == 0
    assert nothing.finished


def test_process_all_that_ran_out_of_time_says_so(open_engine: OpenEngine) -> None:
    engine = open_engine()
    release = threading.Event()

    @engine.task("hold")
    def hold(stage: StageExecution) -> dict[str, Any]:
        release.wait(HANG_GUARD)
        return {}

    wf = hello(StageExecution.for_task("h", "hold"))
    engine.start(wf)
    try:
        result = engine.processor.process_all(timeout=0.2)
    finally:
        release.set()

    assert result.timed_out
    assert not result.finished
    assert result.running == 1
    assert "timed_out=True" in repr(result)
    rest = engine.processor.process_all(timeout=HANG_GUARD)
    assert rest.finished
    assert engine.retrieve(wf.id).status is S.SUCCEEDED


def test_process_all_with_only_later_work_left_is_not_finished_nor_timed_out(
    open_engine: OpenEngine,
) -> None:
    engine = open_engine()
    engine.start(hello(StageExecution.for_task("w", "wait", context={"waitTime": 3600})))

    result = engine.processor.process_all(timeout=HANG_GUARD)

    assert not result.finished
    assert not result.timed_out
    assert result.pending == 1


# -- a task type no worker knows --------------------------------------------------------


def test_an_unknown_task_type_fails_its_stage_and_task_not_only_the_workflow(
    backend: Any,
) -> None:
    store = backend.store()
    queue = backend.queue()
    first = StageExecution.for_task("first", "known")
    second = StageExecution.for_task("second", "missing", requisite_stage_ref_ids={"first"})
    wf = hello(first, second)
    store.store(wf)  # no processor attached yet: nothing to check against
    from stabilize import Orchestrator

    Orchestrator(queue, store=store).start(wf)
    registry = TaskRegistry()
    registry.register("known", lambda stage: {})
    processor = QueueProcessor(queue, store=store, task_registry=registry)
    try:
        processor.process_all(timeout=HANG_GUARD)
    finally:
        processor.stop()

    done = store.retrieve(wf.id)
    by_ref = {s.ref_id: s for s in done.stages}
    assert done.status is S.TERMINAL
    assert by_ref["second"].status is S.TERMINAL
    task = by_ref["second"].tasks[0]
    assert task.status is S.TERMINAL
    assert (
        "no task registered as 'missing' on this worker" in task.task_exception_details["message"]
    )
    assert "known" in task.task_exception_details["message"]
    assert by_ref["first"].status is S.NOT_STARTED  # nothing else ran
    summary = done.failure_summary()
    assert summary is not None
    assert "stage 'second' ended TERMINAL" in summary
    # The log replays to the stored state, the failed stage included.
    rebuilt = EventReplayer(store.backend.own_event_store()).rebuild_workflow_state(wf.id)
    assert rebuilt.to_dict() == done.to_dict()
    assert sorted(s.to_dict()["status"] for s in rebuilt.stages) == ["NOT_STARTED", "TERMINAL"]


# -- opening databases ------------------------------------------------------------------


@pytest.mark.parametrize(
    "opener",
    [
        pytest.param(lambda url: SqliteWorkflowStore(url), id="store"),
        pytest.param(lambda url: SqliteWorkflowStore(url, create_tables=True), id="store-create"),
        pytest.param(lambda url: SqliteQueue(url), id="queue"),
        pytest.param(lambda url: WorkflowEngine(url), id="engine"),
    ],
)
def test_a_sqlite_url_in_a_missing_directory_is_refused_naming_it(
    tmp_path: Path, opener: Any
) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    url = f"sqlite:///{missing / 'wf.db'}"

    with pytest.raises(DatabaseNotFoundError) as caught:
        opener(url)

    message = str(caught.value)
    assert f"cannot create the SQLite database {missing / 'wf.db'}" in message
    assert f"the directory {missing} does not exist" in message
    assert not (tmp_path / "no").exists()  # no directory tree left behind
    # Other databases are unaffected.
    SqliteWorkflowStore(f"sqlite:///{tmp_path / 'ok.db'}")
    assert (tmp_path / "ok.db").is_file()


def test_a_sqlite_path_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")

    with pytest.raises(DatabaseNotFoundError, match="is not a directory"):
        SqliteWorkflowStore(f"sqlite:///{tmp_path / 'file' / 'wf.db'}")

    assert (tmp_path / "file").read_text() == "x"


def test_create_tables_means_the_same_on_sqlite_as_on_postgres(tmp_path: Path) -> None:
    plain = tmp_path / "plain.db"
    SqliteWorkflowStore(f"sqlite:///{plain}").count()
    made = tmp_path / "made.db"
    SqliteWorkflowStore(f"sqlite:///{made}", create_tables=True).count()
    assert plain.is_file()
    assert made.is_file()

    missing = tmp_path / "missing.db"
    with pytest.raises(DatabaseNotFoundError, match=f"no stabilize database at {missing}"):
        SqliteWorkflowStore(f"sqlite:///{missing}", create_tables=False)
    assert not missing.exists()
    # An existing database at the current version opens.
    assert SqliteWorkflowStore(f"sqlite:///{made}", create_tables=False).count() == 0

    with pytest.raises(ValueError, match="create_tables=True and create=False disagree"):
        SqliteWorkflowStore(f"sqlite:///{missing}", create_tables=True, create=False)
    assert not missing.exists()


def test_engine_create_false_opens_only(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"

    with pytest.raises(DatabaseNotFoundError, match="no stabilize database"):
        WorkflowEngine(f"sqlite:///{missing}", create=False)

    assert not missing.exists()


@pytest.mark.parametrize(
    "opener",
    [
        pytest.param(lambda url: PostgresWorkflowStore(url), id="store"),
        pytest.param(lambda url: PostgresQueue(url), id="queue"),
        pytest.param(lambda url: WorkflowEngine(url), id="engine"),
    ],
)
def test_a_postgres_server_that_is_down_is_named_by_host_and_port(opener: Any) -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://someone@127.0.0.1:1/nothing"  # nothing listens on port 1

    with pytest.raises(ConnectionError) as caught:
        opener(url)

    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:1: ")
    assert "check that the server is running" in message
    assert "\n" not in message


# -- closing ----------------------------------------------------------------------------


def test_close_releases_the_file_and_a_new_engine_opens_it_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wf.db'}"
    with WorkflowEngine(url) as engine:
        engine.register("one", lambda stage: {})
        first = engine.run(hello(StageExecution.for_task("a", "one")))
    engine.close()  # a second close does nothing

    with WorkflowEngine(url) as again:
        assert again.retrieve(first.id).status is S.SUCCEEDED


def test_close_keeps_connections_a_store_opened_before_the_engine(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wf.db'}"
    store = SqliteWorkflowStore(url)

    with WorkflowEngine(url) as engine:
        assert engine.store.backend is store.backend
        engine.register("one", lambda stage: {})
        done = engine.run(hello(StageExecution.for_task("a", "one")))

    assert store.retrieve(done.id).status is S.SUCCEEDED  # still open


def test_schema_is_refused_for_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL URLs only"):
        WorkflowEngine(f"sqlite:///{tmp_path / 'wf.db'}", schema="s")
