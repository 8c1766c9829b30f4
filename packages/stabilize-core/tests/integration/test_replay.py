"""Exact replay: the state rebuilt from the event log alone equals the stored state."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from stabilize import (
    JoinType,
    MultiInstanceConfig,
    QueueProcessorConfig,
    SplitType,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
)
from stabilize.events import (
    EventReplayer,
    ReplayError,
    configure_event_sourcing,
    disable_event_sourcing,
)

S = WorkflowStatus


def stage(ref: str, kind: str, requires: tuple[str, ...] = (), **kw: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=kind,
        name=ref,
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(ref, kind, stage_start=True, stage_end=True)],
        **kw,
    )


def registry() -> TaskRegistry:
    reg = TaskRegistry()
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def work(s: StageExecution) -> TaskResult:
        return TaskResult.success(
            outputs={f"{s.ref_id}_out": s.context.get("n", 0) + 1, "shared": s.ref_id},
            context={"seen": sorted(k for k in s.context if not k.startswith("_"))[:3]},
        )

    def flaky(s: StageExecution) -> TaskResult:
        with lock:
            attempts[s.idempotency_key.rsplit(":", 1)[0]] = n = (
                attempts.get(s.idempotency_key.rsplit(":", 1)[0], 0) + 1
            )
        if n < 3:
            raise TransientError("not yet", retry_after=0, context_update={"tries": n})
        return TaskResult.success(outputs={"flaky": n})

    def loop(s: StageExecution) -> TaskResult:
        passes = s.jump_count  # this stage's own jumps so far
        if passes < 2:
            return TaskResult.jump_to("a", context={"passes": passes + 1})
        return TaskResult.success(outputs={"passes": passes})

    def fail(s: StageExecution) -> TaskResult:
        return TaskResult.terminal("boom")

    def soft(s: StageExecution) -> TaskResult:
        return TaskResult.failed_continue("soft", outputs={"soft": True})

    for name, fn in [
        ("work", work),
        ("flaky", flaky),
        ("loop", loop),
        ("fail", fail),
        ("soft", soft),
    ]:
        reg.register(name, fn)
    return reg


def generated(rng: random.Random, i: int) -> Workflow:
    """One of several shapes with random widths and options."""
    shape = i % 6
    if shape == 0:  # fan-out and join, one branch flaky
        width = rng.randint(2, 5)
        branches = [stage(f"b{j}", "flaky" if j == 0 else "work", ("a",)) for j in range(width)]
        return Workflow.create(
            "replay",
            f"fanout{i}",
            [stage("a", "work"), *branches, stage("j", "work", tuple(b.ref_id for b in branches))],
        )
    if shape == 1:  # loop over three stages
        return Workflow.create(
            "replay",
            f"loop{i}",
            [stage("a", "work"), stage("b", "work", ("a",)), stage("c", "loop", ("b",))],
        )
    if shape == 2:  # a failure ends it TERMINAL, cancelling a sibling
        return Workflow.create(
            "replay",
            f"fail{i}",
            [stage("a", "work"), stage("x", "fail", ("a",)), stage("y", "work", ("a",))],
        )
    if shape == 3:  # OR split, quorum join, soft failure
        return Workflow.create(
            "replay",
            f"split{i}",
            [
                stage(
                    "a",
                    "work",
                    context={"n": rng.randint(0, 9)},
                    split_type=SplitType.OR,
                    split_conditions={"hi": "a_out > 5", "lo": "a_out <= 5"},
                ),
                stage("hi", "work", ("a",)),
                stage("lo", "soft", ("a",)),
                stage("m", "work", ("a",)),
                stage("q", "work", ("hi", "lo", "m"), join_type=JoinType.N_OF_M, join_threshold=1),
            ],
        )
    if shape == 4:  # dynamic fan-out with reducers
        items = list(range(rng.randint(1, 4)))
        return Workflow.create(
            "replay",
            f"mi{i}",
            [
                stage(
                    "f",
                    "work",
                    context={"items": items},
                    mi_config=MultiInstanceConfig("items", max_concurrency=2),
                    output_reducers={"shared": "collect"},
                ),
                stage("after", "work", ("f",)),
            ],
        )
    return Workflow.create(  # a long chain
        "replay",
        f"chain{i}",
        [stage(f"s{k}", "work", (f"s{k - 1}",) if k else ()) for k in range(6)],
    )


def comparable(wf: Workflow) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return wf.to_dict(), sorted((s.to_dict() for s in wf.stages), key=lambda d: d["id"])


def test_rebuilt_state_equals_the_stored_state(make_engine, backend):
    events = backend.event_store()
    configure_event_sourcing(events)
    engine = make_engine(
        config=QueueProcessorConfig(poll_frequency_ms=5, max_workers=4), registry=registry()
    )
    rng = random.Random(20261128)
    workflows = [generated(rng, i) for i in range(24)]
    for wf in workflows:
        engine.store.store(wf)
        engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=60)
    replayer = EventReplayer(events)
    statuses = set()
    for wf in workflows:
        stored = engine.store.retrieve(wf.id)
        statuses.add(stored.status)
        assert stored.status.is_complete, wf.name
        assert comparable(replayer.rebuild_workflow_state(wf.id)) == comparable(stored), wf.name
        sequences = [e.sequence for e in events.get_events(wf.id)]
        assert sequences == list(range(1, len(sequences) + 1))
    assert statuses == {S.SUCCEEDED, S.TERMINAL}


def test_time_travel_history_and_comparison(make_engine, backend):
    events = backend.event_store()
    configure_event_sourcing(events)
    engine = make_engine(registry=registry())
    wf = Workflow.create(
        "replay",
        "loop",
        [stage("a", "work"), stage("b", "work", ("a",)), stage("c", "loop", ("b",))],
    )
    engine.run(wf)
    replayer = EventReplayer(events)
    log = events.get_events(wf.id)
    jumps = [e.sequence for e in log if e.event_type == "jump.executed"]
    assert len(jumps) == 2
    # A transition's state change comes first among its events: at the jump's sequence,
    # stage a already runs again, carrying the pass counter.
    at_jump = replayer.time_travel_query(wf.id, "a", jumps[0])
    assert at_jump["status"] == "RUNNING"
    assert at_jump["context"]["passes"] == 1
    final = replayer.time_travel_query(wf.id, "c", log[-1].sequence)
    assert final["outputs"] == {"passes": 2}
    assert final["status"] == "SUCCEEDED"
    # Before anything ran, every stage was NOT_STARTED.
    start = replayer.rebuild_workflow_state(wf.id, as_of_sequence=1)
    assert {s.status for s in start.stages} == {S.NOT_STARTED}
    changes = replayer.compare_states(wf.id, 1, log[-1].sequence)
    assert changes["workflow"]["set"]["status"] == "SUCCEEDED"
    assert set(changes["stages"]) == {"a", "b", "c"}
    history = replayer.get_entity_history(wf.id, wf.stage_by_ref_id("c").id)
    assert [e.event_type for e in history].count("stage.started") == 3


def test_replay_without_a_creation_event_is_refused(make_engine, backend):
    engine = make_engine(registry=registry())
    wf = Workflow.create("replay", "unrecorded", [stage("a", "work")])
    disable_event_sourcing()
    engine.run(wf)  # recorded nothing: event sourcing is off
    events = backend.event_store()
    with pytest.raises(ReplayError, match=r"workflow\.created"):
        EventReplayer(events).rebuild_workflow_state(wf.id)


def test_replay_is_exact_for_values_json_changes_or_nests_deeply(make_engine, backend):
    """Keys JSON turns into strings, tuples, nesting deeper than the fast JSON parser
    goes, floats and big numbers replay to exactly what was stored."""
    events = backend.event_store()
    configure_event_sourcing(events)
    engine = make_engine(registry=registry())
    deep: Any = "bottom"
    for _ in range(300):  # deeper than the fast JSON parser goes
        deep = {"d": deep}

    outputs: dict[Any, Any] = {
        1: "int key",
        None: "None key",
        "f": 1e-05,
        "big": 10**30,
        "u": "é\u2028",
    }
    context: dict[Any, Any] = {2: [1, 2], "t": (3, 4)}

    def awkward(s: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={**outputs, "deep": deep}, context=context)

    engine.registry.register("awkward", awkward)
    # Two tasks: the stage's row is written again after the first put an int key in it.
    first = StageExecution(
        ref_id="a",
        type="awkward",
        name="a",
        tasks=[
            TaskExecution.create("a1", "awkward", stage_start=True),
            TaskExecution.create("a2", "work", stage_end=True),
        ],
    )
    wf = Workflow.create("replay", "awkward", [first, stage("b", "work", ("a",))])
    engine.run(wf)
    stored = engine.store.retrieve(wf.id)
    assert stored.status is S.SUCCEEDED
    a = stored.stage_by_ref_id("a")
    assert a.outputs["1"] == "int key"
    assert a.outputs["null"] == "None key"
    assert a.context["2"] == [1, 2]
    assert a.context["t"] == [3, 4]
    rebuilt = EventReplayer(events).rebuild_workflow_state(wf.id)
    assert comparable(rebuilt) == comparable(stored)


# -- a log recorded before migration 0004 (the engine's keys in the context) ------------------


def old_stage(sid: str, ref: str, kind: str, context: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = {"id": f"{sid}.t", "name": ref, "implementing_class": kind}
    task |= {"status": "NOT_STARTED", "start_time": None, "end_time": None}
    task |= {"stage_start": True, "stage_end": True}
    return {
        "id": sid,
        "ref_id": ref,
        "type": kind,
        "name": ref,
        "status": "NOT_STARTED",
        "context": context,
        "outputs": {},
        "tasks": [task],
        "start_time": None,
        "end_time": None,
    }


def write_events(db: Any, workflow_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Append events to ``db``'s log with raw SQL, as an older stabilize wrote them."""
    import json

    rows = [
        (workflow_id, seq, kind, "workflow", workflow_id, 1000 + seq, json.dumps(data))
        for seq, (kind, data) in enumerate(events, start=1)
    ]
    columns = "workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data"
    if db.is_postgres:
        import psycopg

        with (
            psycopg.connect(db.url, autocommit=True, options=f"-csearch_path={db.schema}") as conn,
            conn.cursor() as cur,
        ):
            cur.executemany(
                f"INSERT INTO events ({columns}) VALUES ({', '.join(['%s'] * 7)})", rows
            )
        return
    import sqlite3

    from stabilize.backends.sqlite import sqlite_path

    lite = sqlite3.connect(sqlite_path(db.url), isolation_level=None)
    try:
        # The rowid holds the time (0003_events.sql): at least timestamp << 16.
        lite.executemany(
            f"INSERT INTO events (rowid, {columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(r[5] << 16, *r) for r in rows],
        )
    finally:
        lite.close()


def test_a_log_recorded_before_migration_0004_replays_into_the_typed_fields(make_engine, backend):
    from stabilize.models import LoopConfig

    make_engine()  # creates the tables
    wf = Workflow.create("replay", "old", [stage("w", "loop"), stage("g", "wait_for_signal")])
    loop = {"_loop_mode": "while", "_loop_condition": "n < 3", "_loop_max_iterations": 5}
    loop |= {"_loop_target": "w_done", "_loop_fail_when_exhausted": False}
    stages = [
        old_stage("s1", "w", "loop", loop),
        old_stage("s2", "g", "wait_for_signal", {"x": 1}),
        old_stage("s3", "wt", "wait", {"waitTime": 60}),
    ]
    running = {"set": {"status": "RUNNING"}}
    write_events(
        backend,
        wf.id,
        [
            ("workflow.created", {"workflow": wf.to_dict(), "stages": stages}),
            (
                "state.changed",
                {
                    "stages": {
                        "s1": {
                            "sub": {"context": {"set": {"_loop_iteration": 2}}},
                            "items": {"tasks": {"0": running}},
                        },
                        "s2": {
                            "sub": {
                                "context": {
                                    "set": {
                                        "_signal_name": "go",
                                        "_signal_data": {"k": 1},
                                        "_signal_user": "alice",
                                        "_jump_count": 2,
                                        "_signal_timeout_seconds": 5,
                                    }
                                }
                            }
                        },
                        "s3": {
                            "sub": {"context": {"set": {"_wait_until": 99.5}}},
                            "items": {"tasks": {"0": running}},
                        },
                    }
                },
            ),
            (
                "state.changed",
                {
                    "stages": {
                        "s1": {"sub": {"context": {"set": {"_loop_carry": {"n": 1}}}}},
                        "s2": {"sub": {"context": {"set": {"_signal_user": "bob"}}}},
                    }
                },
            ),
        ],
    )
    replayer = EventReplayer(backend.event_store())

    state = replayer.rebuild_workflow_state(wf.id)
    w, g, wt = (state.stage_by_ref_id(r) for r in ("w", "g", "wt"))
    assert w.loop == LoopConfig("while", "n < 3", 5, "w_done")
    assert w.tasks[0].state == {"kept": {"iteration": 2, "carry": {"n": 1}}}
    assert (g.signal_user, g.jump_count) == ("bob", 2)
    assert g.context == {"x": 1, "_signal_name": "go", "_signal_data": {"k": 1}}
    assert wt.tasks[0].state == {"until": 99.5}
    assert all(
        not k.startswith(("_loop", "_wait", "_jump")) for s in state.stages for k in s.context
    )

    earlier = replayer.rebuild_workflow_state(wf.id, as_of_sequence=2)
    assert earlier.stage_by_ref_id("g").signal_user == "alice"
    assert earlier.stage_by_ref_id("w").tasks[0].state == {"kept": {"iteration": 2}}
    old_row = replayer.time_travel_query(wf.id, "g", 2)
    assert (old_row["signal_user"], old_row["jump_count"]) == ("alice", 2)
    assert "_signal_user" not in old_row["context"]
    assert state["stages"]["s1"]["loop"]["target"] == "w_done"  # the original's dict form
