"""Control flow end to end on SQLite and PostgreSQL: splits, joins, policies, reducers, loops.

Each test runs real tasks through ``QueueProcessor`` and checks what the stored workflow
and the task executions show. The races release two (or three) upstream branches at the
same instant, under several worker threads (both backends) and under three worker processes
(SQLite in WAL mode; PostgreSQL worker processes are tested in tests/postgres), and check
that a discriminator or a quorum fires exactly once per workflow.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stabilize import (
    JoinType,
    Orchestrator,
    SplitType,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    StragglerPolicy,
    Task,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
    WorkflowValidationError,
    reducers,
    register_reducer,
)
from stabilize.cancellation import is_cancellation_requested
from stabilize.events import configure_event_sourcing
from stabilize.queue.processor.config import QueueProcessorConfig

S = WorkflowStatus
J = JoinType
if TYPE_CHECKING:
    from integration.conftest import Workers

HANG_S = 30.0  # deadlines guard against hangs only
WORKER = Path(__file__).with_name("flow_worker.py")


def stage(ref: str, task: str, requires: Iterable[str] = (), **flow: Any) -> StageExecution:
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
    return Workflow.create("tests", "control-flow", list(stages), context=context)


def statuses(wf: Workflow) -> dict[str, tuple[str, str | None]]:
    return {s.ref_id: (s.status.value, s.status_reason) for s in wf.stages}


def by_ref(wf: Workflow) -> dict[str, StageExecution]:
    return {s.ref_id: s for s in wf.stages}


class Executions:
    """A thread-safe count of task executions by (workflow id, stage ref)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.seen: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def record(self, s: StageExecution) -> None:
        key = (s.workflow_id or "", s.ref_id)
        with self._lock:
            self.counts[key] += 1
            self.seen.setdefault(key, []).append(dict(s.context))

    def of(self, wf: Workflow) -> Counter[str]:
        with self._lock:
            return Counter({ref: n for (wid, ref), n in self.counts.items() if wid == wf.id})

    def per_workflow(self, ref: str) -> Counter[str]:
        with self._lock:
            return Counter({wid: n for (wid, r), n in self.counts.items() if r == ref})


@pytest.fixture
def runs() -> Executions:
    return Executions()


@pytest.fixture(autouse=True)
def private_custom_reducers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Custom reducers are process-wide: give each test an empty set of its own."""
    monkeypatch.setattr(reducers, "_custom", {})


def recording(
    runs: Executions, outputs: Callable[[StageExecution], dict[str, Any]] | None = None
) -> Callable[[StageExecution], TaskResult]:
    def run(s: StageExecution) -> TaskResult:
        runs.record(s)
        return TaskResult.success(outputs=outputs(s) if outputs else {})

    return run


# -- conditional splits, enable conditions, OR joins ---------------------------------------


@pytest.mark.parametrize("taken_first", [True, False], ids=["taken-declared-first", "taken-last"])
def test_or_split_runs_only_the_taken_branches_and_the_or_join(make_engine, runs, taken_first):
    engine = make_engine()
    engine.registry.register("step", recording(runs))
    engine.registry.register("decide", recording(runs, lambda s: {"route": "fast"}))
    branches = [stage("fast", "step", ["s"]), stage("slow", "step", ["s"])]
    if not taken_first:
        branches.reverse()
    wf = workflow(
        stage(
            "s",
            "decide",
            split_type=SplitType.OR,
            split_conditions={"fast": "route == 'fast'", "slow": {"expression": "route == 'slow'"}},
        ),
        *branches,
        stage("slow_2", "step", ["slow"]),
        stage("j", "step", ["fast", "slow_2"], join_type=J.OR),
    )

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    assert statuses(result) == {
        "s": ("SUCCEEDED", None),
        "fast": ("SUCCEEDED", None),
        "slow": ("SKIPPED", "branch_not_taken"),
        "slow_2": ("SKIPPED", "branch_not_taken"),
        "j": ("SUCCEEDED", None),
    }
    assert by_ref(result)["s"].branches_not_taken == ["slow"]
    assert runs.of(wf) == Counter({"s": 1, "fast": 1, "j": 1})


def test_split_condition_error_at_run_time_ends_the_workflow_terminal(make_engine, runs):
    engine = make_engine()
    engine.registry.register("step", recording(runs))
    wf = workflow(
        stage("s", "step", split_type=SplitType.OR, split_conditions={"b": "missing == 1"}),
        stage("b", "step", ["s"]),
    )

    result = engine.run(wf)

    assert result.status is S.TERMINAL
    assert by_ref(result)["s"].status is S.TERMINAL
    assert result.error is not None
    assert "'s'" in result.error
    assert "split condition" in result.error
    assert runs.of(wf) == Counter({"s": 1})


def test_disabled_stage_is_skipped_and_downstream_runs(make_engine, runs):
    engine = make_engine()
    engine.registry.register("step", recording(runs))
    engine.registry.register("probe", recording(runs, lambda s: {"risky": True}))
    wf = workflow(
        stage("probe", "probe"),
        stage("deploy", "step", ["probe"], context={"stageEnabled": "not risky"}),
        stage("notify", "step", ["deploy"]),
        stage("audit", "step", ["notify"], context={"stageEnabled": {"expression": "risky"}}),
    )

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    assert statuses(result)["deploy"] == ("SKIPPED", "disabled")
    assert statuses(result)["notify"] == ("SUCCEEDED", None)
    assert statuses(result)["audit"] == ("SUCCEEDED", None)
    assert runs.of(wf) == Counter({"probe": 1, "notify": 1, "audit": 1})


# -- reducers ---------------------------------------------------------------------------


def emitter(ref: str, n: int) -> Callable[[StageExecution], dict[str, Any]]:
    return lambda s: {"finding": ref, "cost": n, "tags": [ref], "name": ref}


def test_join_tasks_see_reduced_outputs_in_declaration_order(make_engine, runs):
    engine = make_engine()
    register_reducer("joined", lambda values: "|".join(values))
    for ref, n in (("z", 1), ("a", 10), ("m", 100)):
        engine.registry.register(
            f"emit_{ref}",
            recording(runs, emitter(ref, n)),
        )
    engine.registry.register("join", recording(runs, lambda s: {"seen": s.context["finding"]}))
    reducers_: dict[str, str] = {
        "finding": "collect",
        "cost": "sum",
        "tags": "extend",
        "name": "joined",
    }
    wf = workflow(
        stage("z", "emit_z"),
        stage("a", "emit_a"),
        stage("m", "emit_m"),
        stage("j", "join", ["a", "m", "z"], output_reducers=reducers_),
    )

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    [ctx] = runs.seen[(wf.id, "j")]
    assert ctx["finding"] == ["z", "a", "m"]
    assert ctx["cost"] == 111
    assert ctx["tags"] == ["z", "a", "m"]
    assert ctx["name"] == "z|a|m"
    assert by_ref(result)["j"].outputs == {"seen": ["z", "a", "m"]}


def test_unknown_reducer_is_refused_before_anything_is_written(make_engine):
    engine = make_engine()
    engine.registry.register("step", lambda s: TaskResult.success())

    def bad() -> Workflow:
        return workflow(
            stage("a", "step"),
            stage("b", "step"),
            stage("j", "step", ["a", "b"], output_reducers={"x": "no_such_reducer"}),
        )

    before = engine.counts()
    with pytest.raises(WorkflowValidationError) as info:
        engine.store.store(bad())
    assert info.value.ref_id == "j"
    assert "'j'" in str(info.value)
    assert "no_such_reducer" in str(info.value)
    with pytest.raises(WorkflowValidationError) as info:
        engine.orchestrator.start(bad())
    assert info.value.ref_id == "j"
    assert engine.counts() == before == {"workflows": 0, "stages": 0, "queue_messages": 0}

    register_reducer("no_such_reducer", lambda values: values)
    engine.store.store(bad())  # known now
    assert engine.count("workflows") == 1


# -- N_OF_M, DISCRIMINATOR and straggler policies ----------------------------------------


def test_quorum_fires_once_and_stragglers_finish_under_ignore(make_engine, runs):
    engine = make_engine()
    late = threading.Event()

    def straggler(s: StageExecution) -> TaskResult:
        runs.record(s)
        if not late.wait(HANG_S):  # held until the join has run
            return TaskResult.terminal("the join never ran")
        return TaskResult.success(outputs={"vote": s.ref_id})

    def join(s: StageExecution) -> TaskResult:
        runs.record(s)
        late.set()
        return TaskResult.success(outputs={"votes": s.context["vote"]})

    engine.registry.register("vote", recording(runs, lambda s: {"vote": s.ref_id}))
    engine.registry.register("straggler", straggler)
    engine.registry.register("join", join)
    wf = workflow(
        stage("b", "vote"),
        stage("c", "straggler"),
        stage("d", "vote"),
        stage(
            "j",
            "join",
            ["b", "c", "d"],
            join_type=J.N_OF_M,
            join_threshold=2,
            output_reducers={"vote": "collect"},
        ),
        stage("after", "vote", ["j"]),
    )

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    assert runs.of(wf) == Counter({"b": 1, "c": 1, "d": 1, "j": 1, "after": 1})
    assert runs.seen[(wf.id, "j")][0]["vote"] == ["b", "d"]
    assert statuses(result)["c"] == ("SUCCEEDED", None)
    assert by_ref(result)["c"].outputs == {"vote": "c"}
    assert by_ref(result)["j"].outputs == {"votes": ["b", "d"]}  # no late merge under IGNORE


def test_quorum_that_cannot_be_reached_fails_with_a_clear_message(make_engine, runs):
    engine = make_engine()
    engine.registry.register("step", recording(runs))
    wf = workflow(
        stage("s", "step", split_type=SplitType.OR, split_conditions={"b": "false", "c": "false"}),
        stage("d", "step", ["s"]),
        stage("b", "step", ["s"]),
        stage("c", "step", ["s"]),
        stage("j", "step", ["b", "c", "d"], join_type=J.N_OF_M, join_threshold=2),
    )

    result = engine.run(wf)

    assert result.status is S.TERMINAL
    assert by_ref(result)["j"].status is S.TERMINAL
    assert result.error == "join 'j' needed 2 of its 3 requisites to succeed, but only 1 did"
    assert runs.of(wf) == Counter({"s": 1, "d": 1})


def test_merge_policy_folds_late_outputs_into_the_join(make_engine, runs):
    engine = make_engine()
    release = threading.Event()

    def slow(s: StageExecution) -> TaskResult:
        runs.record(s)
        if not release.wait(HANG_S):
            return TaskResult.terminal("the join never ran")
        return TaskResult.success(outputs={"answer": "slow", "cost": 5})

    def join(s: StageExecution) -> TaskResult:
        runs.record(s)
        release.set()
        return TaskResult.success(outputs={"picked": s.context["answer"]})

    engine.registry.register("fast", recording(runs, lambda s: {"answer": "fast", "cost": 2}))
    engine.registry.register("slow", slow)
    engine.registry.register("join", join)
    wf = workflow(
        stage("fast", "fast"),
        stage("slow", "slow"),
        stage(
            "j",
            "join",
            ["fast", "slow"],
            join_type=J.DISCRIMINATOR,
            straggler_policy=StragglerPolicy.MERGE,
            output_reducers={"answer": "collect", "cost": "sum"},
        ),
    )

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    assert runs.of(wf) == Counter({"fast": 1, "slow": 1, "j": 1})
    assert by_ref(result)["j"].outputs == {
        "picked": ["fast"],
        "answer": ["fast", "slow"],
        "cost": 7,
    }


class BlockedUntilCanceled(Task):
    """A sync task that blocks until the engine asks it to stop (or a gate opens)."""

    def __init__(self, runs: Executions) -> None:
        self.runs = runs
        self.started = threading.Event()
        self.on_cancel_calls: list[tuple[str | None, str]] = []
        self.on_cancel_called = threading.Event()
        self.token_fired: list[bool] = []
        self.requested: list[bool] = []
        self.returned = threading.Event()

    def execute(self, stage: StageExecution) -> TaskResult:
        self.runs.record(stage)
        self.started.set()
        token = stage._cancel_token
        assert token is not None
        self.token_fired.append(token.wait(HANG_S))
        self.requested.append(is_cancellation_requested(stage))
        self.returned.set()
        return TaskResult.success(outputs={"late": True})

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        self.on_cancel_calls.append((stage.workflow_id, stage.ref_id))
        self.on_cancel_called.set()
        return None


def test_cancel_policy_stops_a_blocked_sync_straggler_cooperatively(make_engine, runs):
    engine = make_engine(
        config=QueueProcessorConfig(
            poll_frequency_ms=10, max_workers=4, cancel_check_interval_seconds=0.02
        )
    )
    blocked = BlockedUntilCanceled(runs)

    def fast(s: StageExecution) -> TaskResult:
        runs.record(s)
        if not blocked.started.wait(HANG_S):  # the straggler is running when the join fires
            return TaskResult.terminal("the slow branch never started")
        return TaskResult.success(outputs={"winner": s.ref_id})

    engine.registry.register("fast", fast)
    engine.registry.register("blocked", blocked)
    engine.registry.register("step", recording(runs))
    wf = workflow(
        stage("a", "step"),
        stage("fast", "fast", ["a"]),
        stage("slow", "blocked", ["a"]),
        stage("slow_next", "step", ["slow"]),
        stage(
            "j",
            "step",
            ["fast", "slow_next"],
            join_type=J.DISCRIMINATOR,
            straggler_policy=StragglerPolicy.CANCEL,
        ),
        stage("after", "step", ["j"]),
    )

    result = engine.run(wf)
    assert blocked.on_cancel_called.wait(HANG_S)

    assert result.status is S.SUCCEEDED
    assert statuses(result) == {
        "a": ("SUCCEEDED", None),
        "fast": ("SUCCEEDED", None),
        "slow": ("CANCELED", "straggler"),
        "slow_next": ("SKIPPED", "withdrawn"),
        "j": ("SUCCEEDED", None),
        "after": ("SUCCEEDED", None),
    }
    slow = by_ref(result)["slow"]
    assert slow.tasks[0].status is S.CANCELED
    assert slow.outputs == {}  # its late result was discarded
    # The workflow may end before the task's thread, woken by the token, returns.
    assert blocked.returned.wait(HANG_S)
    assert blocked.token_fired == [True]  # the cooperative cancel reached the task
    assert blocked.requested == [True]
    assert blocked.on_cancel_calls == [(wf.id, "slow")]
    assert runs.of(wf) == Counter({"a": 1, "fast": 1, "slow": 1, "j": 1, "after": 1})
    assert engine.queue.size() == 0


class AsyncStraggler(Task):
    """An async task that waits far longer than the test; it must be cancelled outright."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.on_cancel_called = threading.Event()

    async def execute(self, stage: StageExecution) -> TaskResult:
        self.started.set()
        try:
            await asyncio.sleep(HANG_S)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return TaskResult.success(outputs={"late": True})

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        self.on_cancel_called.set()
        return None


def test_cancel_policy_cancels_an_async_straggler(make_engine, runs):
    engine = make_engine(
        config=QueueProcessorConfig(
            poll_frequency_ms=10, max_workers=4, cancel_check_interval_seconds=0.02
        )
    )
    straggler = AsyncStraggler()

    def fast(s: StageExecution) -> TaskResult:
        runs.record(s)
        if not straggler.started.wait(HANG_S):
            return TaskResult.terminal("the async branch never started")
        return TaskResult.success()

    engine.registry.register("fast", fast)
    engine.registry.register("async_slow", straggler)
    engine.registry.register("step", recording(runs))
    wf = workflow(
        stage("fast", "fast"),
        stage("slow", "async_slow"),
        stage(
            "j",
            "step",
            ["fast", "slow"],
            join_type=J.N_OF_M,
            join_threshold=1,
            straggler_policy=StragglerPolicy.CANCEL,
        ),
    )

    result = engine.run(wf)

    assert straggler.cancelled.wait(HANG_S)
    assert straggler.on_cancel_called.wait(HANG_S)
    assert result.status is S.SUCCEEDED
    assert statuses(result)["slow"] == ("CANCELED", "straggler")
    assert by_ref(result)["slow"].outputs == {}
    assert runs.of(wf) == Counter({"fast": 1, "j": 1})


# -- MULTI_MERGE -------------------------------------------------------------------------


def test_multi_merge_join_runs_once_per_successful_requisite(make_engine, runs):
    engine = make_engine()
    engine.registry.register("step", recording(runs, lambda s: {"from": s.ref_id}))
    engine.registry.register("merge", recording(runs))
    wf = workflow(
        stage("s", "step", split_type=SplitType.OR, split_conditions={"dead": "false"}),
        stage("b", "step", ["s"]),
        stage("c", "step", ["s"]),
        stage("d", "step", ["s"]),
        stage("dead", "step", ["s"]),
        stage("j", "merge", ["b", "c", "d", "dead"], join_type=J.MULTI_MERGE),
    )

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    assert statuses(result)["dead"] == ("SKIPPED", "branch_not_taken")
    assert runs.of(wf) == Counter({"s": 1, "b": 1, "c": 1, "d": 1, "j": 3})
    assert by_ref(result)["j"].multi_merge_pending == 0


# -- loops -------------------------------------------------------------------------------


def test_jump_back_around_a_join_reruns_every_stage(make_engine, runs):
    engine = make_engine()
    engine.registry.register(
        "start", recording(runs, lambda s: {"round": int(s.context.get("round", 0))})
    )
    engine.registry.register("step", recording(runs, lambda s: {s.ref_id: s.context["round"]}))

    def join(s: StageExecution) -> TaskResult:
        runs.record(s)
        n = int(s.context["round"])
        if n < 2:
            return TaskResult.jump_to("a", context={"round": n + 1})
        return TaskResult.success(outputs={"rounds": n + 1})

    engine.registry.register("join", join)
    wf = workflow(
        stage("a", "start"),
        stage("b", "step", ["a"]),
        stage("c", "step", ["a"]),
        stage("j", "join", ["b", "c"]),
        stage("end", "step", ["j"]),
    )

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    assert result.jump_count == 2
    assert runs.of(wf) == Counter({"a": 3, "b": 3, "c": 3, "j": 3, "end": 1})
    assert [ctx["round"] for ctx in runs.seen[(wf.id, "j")]] == [0, 1, 2]
    assert by_ref(result)["j"].outputs == {"rounds": 3}
    assert by_ref(result)["end"].outputs == {"end": 2}


# -- races under several threads ---------------------------------------------------------


class Barriers:
    """One barrier per workflow: its branches all return at the same instant."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self._lock = threading.Lock()
        self._barriers: dict[str, threading.Barrier] = {}

    def wait(self, workflow_id: str) -> None:
        with self._lock:
            barrier = self._barriers.setdefault(
                workflow_id, threading.Barrier(self.parties, timeout=HANG_S)
            )
        barrier.wait()


def race(make_engine: Any, runs: Executions, branches: list[str], **join: Any) -> None:
    """Run 20 workflows whose branches finish together; each join must run exactly once."""
    workers = 4
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=5, max_workers=workers))
    events = engine.db.event_store()
    configure_event_sourcing(events)
    barriers = Barriers(len(branches))

    def branch(s: StageExecution) -> TaskResult:
        runs.record(s)
        barriers.wait(s.workflow_id or "")
        return TaskResult.success(outputs={"winner": s.ref_id})

    engine.registry.register("root", recording(runs))
    engine.registry.register("branch", branch)
    engine.registry.register("join", recording(runs))
    # A batch never holds more blocked branches than there are workers (else they deadlock).
    batch = workers // len(branches)
    done: list[Workflow] = []
    for first in range(0, 20, batch):
        wfs = [
            workflow(
                stage("root", "root"),
                *(stage(b, "branch", ["root"]) for b in branches),
                stage("j", "join", branches, **join),
                stage("after", "root", ["j"]),
            )
            for _ in range(first, min(first + batch, 20))
        ]
        for wf in wfs:
            engine.store.store(wf)
            engine.orchestrator.start(wf)
        engine.processor.process_all(timeout=HANG_S)
        done += [engine.store.retrieve(wf.id) for wf in wfs]

    assert len(done) == 20
    for wf in done:
        assert wf.status is S.SUCCEEDED, (wf.id, statuses(wf))
        expected = Counter({"root": 1, "j": 1, "after": 1, **dict.fromkeys(branches, 1)})
        assert runs.of(wf) == expected, wf.id
        fired = [e for e in events.get_events(wf.id) if e.event_type == "join.fired"]
        assert len(fired) == 1, wf.id
    assert runs.per_workflow("j") == Counter({wf.id: 1 for wf in done})
    events.close()


def test_discriminator_fires_once_when_both_branches_finish_together(make_engine, runs):
    race(make_engine, runs, ["b", "c"], join_type=J.DISCRIMINATOR)


def test_quorum_fires_once_when_three_branches_finish_together(make_engine, runs):
    race(make_engine, runs, ["b", "c", "d"], join_type=J.N_OF_M, join_threshold=2)


# -- a race across worker processes ------------------------------------------------------


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# SQLite only (no ``backend``): flow_worker.py takes a SQLite URL and the race needs WAL;
# worker processes on PostgreSQL are covered by tests/postgres/test_pg_multiprocess.py.
@pytest.mark.parametrize(
    ("branches", "join", "threads"),
    [
        pytest.param(["b", "c"], {"join_type": J.DISCRIMINATOR}, 16, id="discriminator"),
        pytest.param(
            ["b", "c", "d"], {"join_type": J.N_OF_M, "join_threshold": 2}, 24, id="quorum-2-of-3"
        ),
    ],
)
def test_join_fires_once_across_three_worker_processes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: Workers,
    branches: list[str],
    join: dict[str, Any],
    threads: int,
) -> None:
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")
    url = f"sqlite:///{tmp_path / 'race.db'}"
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()
    orchestrator = Orchestrator(queue, store=store)
    started, release, joins, stop = (
        tmp_path / "started.log",
        tmp_path / "release",
        tmp_path / "joins.log",
        tmp_path / "stop",
    )
    count = 20
    wfs = [
        workflow(
            stage("root", "root"),
            *(stage(b, "branch", ["root"]) for b in branches),
            stage("j", "join", branches, **join),
        )
        for _ in range(count)
    ]
    for wf in wfs:
        store.store(wf)
        orchestrator.start(wf)
    args = [url, "--started", str(started), "--release", str(release), "--joins", str(joins)]
    assert 2 * threads < len(branches) * count <= 3 * threads  # all three processes needed
    for _ in range(3):
        workers.spawn(WORKER, [*args, "--stop", str(stop), "--max-workers", str(threads)])

    # Every branch of every workflow is running (blocked) before any is released.
    total = len(branches) * count
    workers.wait_until(lambda: len(lines(started)) == total, "all branches to start")
    release.touch()

    def all_done() -> bool:
        return all(store.retrieve(wf.id).status.is_complete for wf in wfs)

    workers.wait_until(all_done, "every workflow to finish")
    stop.touch()
    for worker in workers.started:
        worker.proc.wait(timeout=HANG_S)
    assert [w.proc.returncode for w in workers.started] == [0, 0, 0], workers.errors()

    starters = Counter(line.split("\t")[0] for line in lines(started))
    assert starters == Counter({wf.id: len(branches) for wf in wfs})
    join_runs = Counter(line.split("\t")[0] for line in lines(joins))
    assert join_runs == Counter({wf.id: 1 for wf in wfs})
    pids = {line.split("\t")[1] for line in lines(joins)}
    assert pids <= {str(w.pid) for w in workers.started}
    for wf in wfs:
        final = store.retrieve(wf.id)
        assert final.status is S.SUCCEEDED
        assert {s.ref_id: s.status for s in final.stages} == dict.fromkeys(
            ["root", *branches, "j"], S.SUCCEEDED
        )


def test_an_idle_worker_process_wakes_on_a_commit_of_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: Workers
) -> None:
    # The worker polls every ten minutes, far beyond the hang guard: only noticing the
    # file's data_version change, the commit of this process, starts the workflows in time
    # (issue 19). Each workflow is submitted once the worker is idle again.
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")
    url = f"sqlite:///{tmp_path / 'wake.db'}"
    store = SqliteWorkflowStore(url, create_tables=True)
    orchestrator = Orchestrator(SqliteQueue(url), store=store)
    files = {name: tmp_path / name for name in ("started", "release", "joins", "stop")}
    args = [url, *(f"--{k}={v}" for k, v in files.items()), "--poll-ms", "600000"]
    worker = workers.spawn(WORKER, args)
    for n in range(3):
        wf = workflow(stage("root", "root"), stage("j", "join", ["root"]))
        store.store(wf)
        orchestrator.start(wf)

        def succeeded(wf_id: str = wf.id) -> bool:
            return store.retrieve(wf_id).status is S.SUCCEEDED

        workers.wait_until(succeeded, f"workflow {n} to succeed")
    assert len(lines(files["joins"])) == 3
    files["stop"].touch()
    assert worker.wait(timeout=HANG_S) == 0, workers.errors()
