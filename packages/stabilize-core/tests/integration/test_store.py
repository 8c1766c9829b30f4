"""The workflow store on SQLite and PostgreSQL: round trips, listings, validation refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from stabilize import (
    CircularDependencyError,
    InvalidStageGraphError,
    StageExecution,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowNotFoundError,
    WorkflowStatus,
    WorkflowValidationError,
)
from stabilize.errors import ContextSerializationError, UnknownTaskTypeError

S = WorkflowStatus


def stage(
    ref: str,
    task: str = "noop",
    requires: Iterable[str] = (),
    context: dict[str, Any] | None = None,
) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=f"Stage {ref}",
        context=dict(context or {}),
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(f"{ref}-task", task, stage_start=True, stage_end=True)],
    )


def make(application: str = "app", name: str = "wf", *stages: StageExecution) -> Workflow:
    return Workflow.create(
        application=application, name=name, stages=list(stages) or [stage("only")]
    )


def unchecked(*stages: StageExecution) -> Workflow:
    """A workflow built without Workflow.create, so that the store must refuse it."""
    return Workflow(application="app", name="bad", stages=list(stages))


# -- round trip ------------------------------------------------------------------------


def test_store_and_retrieve_round_trip_before_running(make_engine):
    engine = make_engine()
    wf = Workflow.create(
        application="shop",
        name="orders",
        stages=[
            stage("fetch", context={"url": "https://example.test", "n": [1, 2, {"x": None}]}),
            stage("save", requires={"fetch"}, context={"unicode": "żółw ✓"}),
        ],
        trigger={"user": "alice", "at": 3},
        context={"region": "eu", "_max_jumps": 4},
        pipeline_config_id="cfg-1",
    )

    engine.store.store(wf)
    got = engine.store.retrieve(wf.id)

    assert got is not wf
    assert got.to_dict() == wf.to_dict()
    assert [s.to_dict() for s in got.stages] == [s.to_dict() for s in wf.stages]
    assert got.stage_by_ref_id("save").requisite_stage_ref_ids == {"fetch"}
    assert got.status is S.NOT_STARTED
    assert engine.store.exists(wf.id)


def test_retrieve_after_running_holds_outputs_statuses_and_times(make_engine):
    engine = make_engine()
    engine.registry.register(
        "emit", lambda s: TaskResult.success(outputs={"from": s.ref_id}, context={"seen": True})
    )
    engine.registry.register("soft", lambda s: TaskResult.failed_continue("meh"))
    wf = make(
        "app",
        "wf",
        stage("a", "emit"),
        stage("b", "soft", {"a"}),
        stage("c", "emit", {"b"}),
    )

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    stages = {s.ref_id: s for s in result.stages}
    assert stages["a"].outputs == {"from": "a"}
    assert stages["a"].context == {"seen": True}
    assert stages["b"].status is S.FAILED_CONTINUE
    assert stages["b"].tasks[0].status is S.FAILED_CONTINUE
    assert stages["b"].tasks[0].task_exception_details == {"message": "meh"}
    assert stages["c"].status is S.SUCCEEDED
    for s in result.stages:
        assert s.start_time is not None
        assert s.end_time is not None
        assert s.tasks[0].start_time is not None
        assert s.tasks[0].end_time is not None
    assert result.start_time is not None
    assert result.end_time is not None
    assert result.version > 1
    # A second retrieve reads the same state (fresh copies, same content).
    again = engine.store.retrieve(wf.id)
    assert again is not result
    assert again.to_dict() == result.to_dict()
    assert [s.to_dict() for s in again.stages] == [s.to_dict() for s in result.stages]
    assert engine.store.stage_outputs(wf.id) == {"a": {"from": "a"}, "b": {}, "c": {"from": "c"}}


def test_retrieve_unknown_raises_workflow_not_found(make_engine):
    engine = make_engine()

    with pytest.raises(WorkflowNotFoundError, match="nope"):
        engine.store.retrieve("nope")
    assert not engine.store.exists("nope")


def test_store_same_id_twice_raises_value_error(make_engine):
    engine = make_engine()
    wf = make()
    engine.store.store(wf)
    before = engine.counts()

    with pytest.raises(ValueError, match=wf.id):
        engine.store.store(wf)

    assert engine.counts() == before


# -- listing ---------------------------------------------------------------------------


@pytest.fixture
def populated(make_engine: Any) -> Any:
    """Six workflows stored in order w0..w5 (ids sort in storing order)."""
    engine = make_engine()
    engine.registry.register("ok", lambda s: TaskResult.success())
    engine.registry.register("bad", lambda s: TaskResult.terminal("no"))
    specs = [
        ("shop", "nightly import", "ok"),
        ("shop", "refund 50%", "bad"),
        ("blog", "nightly build", "ok"),
        ("shop", "nightly import", None),
        ("blog", "publish_now", None),
        ("shop", "audit", "ok"),
    ]
    made = []
    for i, (app, name, task) in enumerate(specs):
        wf = make(app, name, stage("s", task or "ok"))
        wf.id = f"w{i}"
        engine.store.store(wf)
        if task is not None:
            engine.orchestrator.start(wf)
            engine.processor.process_all(timeout=30)
        made.append(wf)
    return engine


def ids(workflows: list[Workflow]) -> list[str]:
    return [wf.id for wf in workflows]


def test_list_workflows_newest_first(populated):
    assert ids(populated.store.list_workflows()) == ["w5", "w4", "w3", "w2", "w1", "w0"]


def test_list_workflows_by_application(populated):
    assert ids(populated.store.list_workflows(application="shop")) == ["w5", "w3", "w1", "w0"]
    assert ids(populated.store.retrieve_by_application("blog")) == ["w4", "w2"]
    assert populated.store.list_workflows(application="none") == []


def test_list_workflows_by_one_status_and_many(populated):
    store = populated.store
    assert ids(store.list_workflows(status=S.SUCCEEDED)) == ["w5", "w2", "w0"]
    assert ids(store.list_workflows(status="TERMINAL")) == ["w1"]
    assert ids(store.list_workflows(status=[S.NOT_STARTED, S.TERMINAL])) == ["w4", "w3", "w1"]
    assert ids(store.list_workflows(application="shop", status={S.NOT_STARTED})) == ["w3"]


def test_list_workflows_by_name_substring(populated):
    store = populated.store
    assert ids(store.list_workflows(name="nightly")) == ["w3", "w2", "w0"]
    assert ids(store.list_workflows(name="50%")) == ["w1"]  # % is literal
    assert ids(store.list_workflows(name="h_n")) == ["w4"]  # _ is literal
    assert ids(store.list_workflows(name="NIGHTLY")) == ["w3", "w2", "w0"]  # any case, any db
    assert ids(store.search(name="import", application="shop")) == ["w3", "w0"]


def test_list_workflows_limit_and_offset(populated):
    store = populated.store
    assert ids(store.list_workflows(limit=2)) == ["w5", "w4"]
    assert ids(store.list_workflows(limit=2, offset=2)) == ["w3", "w2"]
    assert ids(store.list_workflows(limit=10, offset=5)) == ["w0"]
    assert store.list_workflows(offset=6) == []


def test_count(populated):
    store = populated.store
    assert store.count() == 6
    assert store.count(application="shop") == 4
    assert store.count(status=S.SUCCEEDED) == 3
    assert store.count(application="blog", status=[S.SUCCEEDED, S.NOT_STARTED]) == 2


def test_delete_removes_workflow_stages_and_messages(make_engine):
    engine = make_engine()
    keep = make("app", "keep", stage("a"), stage("b", requires={"a"}))
    gone = make("app", "gone", stage("a"), stage("b", requires={"a"}))
    engine.store.store(keep)
    engine.orchestrator.start(keep)
    engine.orchestrator.start(gone)  # stores it and queues its start

    engine.store.delete(gone.id)

    assert not engine.store.exists(gone.id)
    with pytest.raises(WorkflowNotFoundError):
        engine.store.retrieve(gone.id)
    assert engine.count("workflows") == 1
    assert engine.query("SELECT DISTINCT workflow_id FROM stages") == [(keep.id,)]
    assert engine.query("SELECT workflow_id FROM queue_messages") == [(keep.id,)]
    assert ids(engine.store.list_workflows()) == [keep.id]


# -- validation refusals ---------------------------------------------------------------


def refusal_cases() -> list[Any]:
    return [
        pytest.param(
            lambda: unchecked(stage("a", requires={"b"}), stage("b", requires={"a"})),
            CircularDependencyError,
            "a",
            id="cycle",
        ),
        pytest.param(
            lambda: unchecked(stage("a"), stage("b", requires={"ghost"})),
            InvalidStageGraphError,
            "b",
            id="unknown-ref",
        ),
        pytest.param(
            lambda: unchecked(stage("a"), stage("a")),
            InvalidStageGraphError,
            "a",
            id="duplicate-ref",
        ),
        pytest.param(
            lambda: unchecked(stage("a"), stage("selfish", requires={"selfish"})),
            InvalidStageGraphError,
            "selfish",
            id="self-dependency",
        ),
        pytest.param(
            lambda: unchecked(stage("a"), stage("mystery", "not_registered", {"a"})),
            UnknownTaskTypeError,
            "mystery",
            id="unregistered-task",
        ),
        pytest.param(
            lambda: unchecked(stage("a"), stage("opaque", context={"handle": object()})),
            ContextSerializationError,
            "opaque",
            id="non-json-context",
        ),
    ]


@pytest.mark.parametrize(("build", "error", "ref"), refusal_cases())
def test_store_refuses_invalid_workflows_and_writes_nothing(make_engine, build, error, ref):
    engine = make_engine()  # its registry knows noop only
    engine.store.store(make("app", "fine"))
    before = engine.counts()
    wf: Workflow = build()

    with pytest.raises(error) as caught:
        engine.store.store(wf)

    assert isinstance(caught.value, WorkflowValidationError)
    assert caught.value.ref_id == ref
    assert ref in str(caught.value)
    assert engine.counts() == before
    assert not engine.store.exists(wf.id)


@pytest.mark.parametrize(("build", "error", "ref"), refusal_cases())
def test_orchestrator_start_refuses_invalid_workflows_and_writes_nothing(
    make_engine, build, error, ref
):
    engine = make_engine()
    engine.store.store(make("app", "fine"))
    before = engine.counts()
    wf: Workflow = build()

    with pytest.raises(error) as caught:
        engine.orchestrator.start(wf)

    assert caught.value.ref_id == ref
    assert engine.counts() == before


def test_non_json_context_error_names_the_key(make_engine):
    engine = make_engine()
    wf = unchecked(stage("opaque", context={"ok": 1, "handle": object()}))

    with pytest.raises(ContextSerializationError, match="'handle'"):
        engine.store.store(wf)


def test_a_context_that_contains_itself_is_refused_by_name(make_engine):
    engine = make_engine()
    loop: dict[str, Any] = {}
    loop["self"] = loop
    wf = unchecked(stage("looped", context={"ok": 1, "loop": loop}))
    before = engine.counts()

    with pytest.raises(ContextSerializationError, match="'loop'"):
        engine.store.store(wf)
    assert engine.counts() == before


def test_cycle_error_lists_the_cycle(make_engine):
    engine = make_engine()
    wf = unchecked(
        stage("a", requires={"c"}), stage("b", requires={"a"}), stage("c", requires={"b"})
    )

    with pytest.raises(CircularDependencyError) as caught:
        engine.store.store(wf)

    cycle = caught.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("build", "kind"),
    [
        (lambda: [stage("a", requires={"b"}), stage("b", requires={"a"})], "cycle"),
        (lambda: [stage("a", requires={"zzz"})], "unknown_ref"),
        (lambda: [stage("a"), stage("a")], "duplicate_ref"),
        (lambda: [stage("a", requires={"a"})], "self_edge"),
    ],
)
def test_workflow_create_refuses_bad_graphs(
    build: Callable[[], list[StageExecution]], kind: str
) -> None:
    with pytest.raises(InvalidStageGraphError) as caught:
        Workflow.create(application="app", name="bad", stages=build())

    assert caught.value.kind == kind
    assert caught.value.ref_id == "a"
