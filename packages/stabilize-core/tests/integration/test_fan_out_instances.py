"""Dynamic fan-out at scale (issue 19): an instance stores only its own context.

Each instance used to store a copy of its fan-out stage's whole context, the list of
items included: N items meant N² list elements in the stored rows, the event log and
memory. Now an instance row holds its item and what its tasks set; the fan-out stage's
keys are layered back when the workflow is loaded, so tasks see what they saw before.
The wide runs here only need to finish: the per-test hang guard is what fails them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from stabilize import (
    MultiInstanceConfig,
    QueueProcessorConfig,
    StageExecution,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize.backends.sqlite import sqlite_path
from stabilize.events import EventReplayer, configure_event_sourcing

if TYPE_CHECKING:
    from conftest import Database

S = WorkflowStatus


def stage(ref: str, task: str, requires: set[str] | None = None, **fields: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, task, stage_start=True, stage_end=True)],
        **fields,
    )


def fast() -> QueueProcessorConfig:
    return QueueProcessorConfig(poll_frequency_ms=5, max_workers=4)


def instance_rows(engine: Any, workflow_id: str) -> dict[str, dict[str, Any]]:
    """The stored rows of a workflow's fan-out instances, read with SQL, by ``ref_id``."""
    rows = engine.query("SELECT body FROM stages WHERE workflow_id = ?", (workflow_id,))
    found = [json.loads(body) for (body,) in rows]
    return {row["ref_id"]: row for row in found if row.get("parent_stage_id")}


def comparable(wf: Workflow) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return wf.to_dict(), sorted((s.to_dict() for s in wf.stages), key=lambda d: d["id"])


ITEMS = [f"item-{i}" for i in range(40)]


def test_instance_rows_hold_only_their_item_and_tasks_see_the_fan_outs_context(
    make_engine, backend
):
    events = backend.event_store()
    configure_event_sourcing(events)
    engine = make_engine(config=fast())
    seen: dict[int, tuple[Any, ...]] = {}

    def probe(s: StageExecution) -> TaskResult:
        assert s.mi_index is not None
        c = s.context
        seen[s.mi_index] = (c["file"], c["owner"], "items" in c, c["up"], sorted(s.own_context()))
        return TaskResult.success(outputs={"got": c["file"]})

    engine.registry.register("source", lambda s: {"up": 1, "owner": "upstream"})
    engine.registry.register("probe", probe)
    engine.registry.register("noop", lambda s: {})
    wf = Workflow.create(
        "tests",
        "instance rows",
        [
            stage("source", "source"),
            stage(
                "each",
                "probe",
                {"source"},
                context={"items": ITEMS, "owner": "fan", "file": "the fan-out's"},
                mi_config=MultiInstanceConfig("items", item_key="file"),
                output_reducers={"got": "collect"},
            ),
            stage("after", "noop", {"each"}),
        ],
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED, final.error
    # Tasks see an ancestor's output under the fan-out stage's context under the item;
    # own_context() still holds the fan-out stage's keys, but not the list of all items
    # (a copy of it in each instance's task would cost O(n) per instance, issue 19).
    assert seen == {i: (item, "fan", False, 1, ["file", "owner"]) for i, item in enumerate(ITEMS)}
    each = final.stage_by_ref_id("each")
    assert each.outputs["instances"] == [{"got": item} for item in ITEMS]
    assert each.outputs["got"] == ITEMS

    rows = instance_rows(engine, wf.id)
    assert len(rows) == len(ITEMS)
    for ref, row in rows.items():
        assert row["context"] == {"file": ITEMS[row["mi_index"]]}, ref
    # Loaded through the store, an instance reads as it did.
    assert final.stage_by_ref_id("each[3]").context == {
        "items": ITEMS,
        "owner": "fan",
        "file": "item-3",
    }
    # The event log holds no copy of the list per instance either.
    logged = events.get_events(wf.id)
    copies = sum(json.dumps(e.data).count('"item-3"') for e in logged)
    assert copies < len(ITEMS)
    rebuilt = EventReplayer(events).rebuild_workflow_state(wf.id)
    assert comparable(rebuilt) == comparable(final)


class Concurrency:
    """Counts the tasks running at once and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


WIDE = 2000


def test_thousands_of_instances_finish_in_item_order_under_a_concurrency_limit(make_engine):
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=5, max_workers=8))
    running = Concurrency()

    def double(s: StageExecution) -> TaskResult:
        with running:
            return TaskResult.success(outputs={"double": 2 * s.context["n"]})

    engine.registry.register("double", double)
    engine.registry.register("total", lambda s: {"seen": s.context["double"]})
    wf = Workflow.create(
        "tests",
        "wide fan-out",
        [
            stage(
                "each",
                "double",
                context={"numbers": list(range(WIDE))},
                mi_config=MultiInstanceConfig("numbers", item_key="n", max_concurrency=6),
                output_reducers={"double": "sum"},
            ),
            stage("after", "total", {"each"}),
        ],
    )
    final = engine.run(wf, timeout=55)
    assert final.status is S.SUCCEEDED, final.error
    assert running.most <= 6
    each = final.stage_by_ref_id("each")
    assert each.outputs["instances"] == [{"double": 2 * i} for i in range(WIDE)]
    assert each.outputs["double"] == WIDE * (WIDE - 1)
    assert final.stage_by_ref_id("after").outputs == {"seen": WIDE * (WIDE - 1)}
    rows = instance_rows(engine, wf.id)
    assert len(rows) == WIDE
    assert all(row["context"] == {"n": row["mi_index"]} for row in rows.values())


def test_thousands_of_instances_complete_at_their_join_threshold(make_engine):
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=5, max_workers=8))
    need = 1500
    engine.registry.register("value", lambda s: {"value": s.context["item"]})
    wf = Workflow.create(
        "tests",
        "k of n",
        [
            stage(
                "each",
                "value",
                context={"items": list(range(WIDE))},
                mi_config=MultiInstanceConfig("items", max_concurrency=5, join_threshold=need),
                output_reducers={"value": "sum"},
            )
        ],
    )
    final = engine.run(wf, timeout=55)
    assert final.status is S.SUCCEEDED, final.error
    instances = sorted(
        (s for s in final.stages if s.parent_stage_id is not None), key=lambda s: s.mi_index or 0
    )
    assert len(instances) == WIDE
    won = [s for s in instances if s.status is S.SUCCEEDED]
    assert len(won) == need
    rest = {(s.status, s.status_reason) for s in instances if s.status is not S.SUCCEEDED}
    assert rest <= {(S.CANCELED, "straggler"), (S.SKIPPED, "withdrawn")}
    each = final.stage_by_ref_id("each")
    assert each.outputs["instances"] == [
        {"value": s.mi_index} if s.status is S.SUCCEEDED else None for s in instances
    ]
    assert each.outputs["value"] == sum(s.mi_index or 0 for s in won)


def test_a_loop_runs_the_fan_out_again_with_what_the_jump_carried(make_engine, backend):
    events = backend.event_store()
    configure_event_sourcing(events)
    engine = make_engine(config=fast())
    ran: list[tuple[int, str, list[str] | None]] = []
    lock = threading.Lock()

    def work(s: StageExecution) -> TaskResult:
        with lock:
            ran.append((s.context.get("round", 1), s.context["item"], s.context.get("items")))
        return TaskResult.success(outputs={"got": [s.context.get("round", 1), s.context["item"]]})

    def review(s: StageExecution) -> TaskResult:
        if s.context["instances"][0]["got"][0] < 2:  # the round the instances ran in
            return TaskResult.jump_to("each", context={"round": 2})
        return TaskResult.success(outputs={"reviewed": s.context["instances"]})

    engine.registry.register("work", work)
    engine.registry.register("review", review)
    wf = Workflow.create(
        "tests",
        "loop over a fan-out",
        [
            stage(
                "each",
                "work",
                context={"items": ["a", "b", "c"]},
                mi_config=MultiInstanceConfig("items", max_concurrency=2),
            ),
            stage("review", "review", {"each"}),
        ],
    )
    final = engine.run(wf)
    assert final.status is S.SUCCEEDED, final.error
    assert sorted(ran) == [(r, x, None) for r in (1, 2) for x in "abc"]
    second = [[2, x] for x in "abc"]
    assert final.stage_by_ref_id("each").outputs["instances"] == [{"got": g} for g in second]
    assert final.stage_by_ref_id("review").outputs == {"reviewed": [{"got": g} for g in second]}
    rows = instance_rows(engine, wf.id)
    again = sorted(r for r in rows if "@" in r)
    assert sorted(r for r in rows if "@" not in r) == ["each[0]", "each[1]", "each[2]"]
    assert [r.split("@")[0] for r in again] == ["each[0]", "each[1]", "each[2]"]
    assert all(row["context"] == {"item": "abc"[row["mi_index"]]} for row in rows.values())
    rebuilt = EventReplayer(events).rebuild_workflow_state(wf.id)
    assert comparable(rebuilt) == comparable(final)


# -- rows written before issue 19 ------------------------------------------------------------


@contextmanager
def raw(db: Database) -> Iterator[Any]:
    """A DB-API connection to ``db`` that is not stabilize's (autocommit)."""
    if db.is_postgres:
        import psycopg

        with psycopg.connect(db.url, autocommit=True, options=f"-csearch_path={db.schema}") as pg:
            yield pg
        return
    lite = sqlite3.connect(sqlite_path(db.url), isolation_level=None)
    try:
        yield lite
    finally:
        lite.close()


def with_copies(db: Database, workflow_id: str) -> None:
    """Rewrite a workflow's instance rows as earlier versions stored them: each instance
    with a copy of its fan-out stage's whole context."""
    mark = "%s" if db.is_postgres else "?"
    with raw(db) as conn:
        rows = conn.execute(f"SELECT body FROM stages WHERE workflow_id = {mark}", (workflow_id,))
        found = [json.loads(body) for (body,) in rows.fetchall()]
        fan = next(row for row in found if row.get("mi_config"))
        for row in found:
            if row.get("parent_stage_id") == fan["id"]:
                row["context"] = {**fan["context"], **row["context"]}
                conn.execute(
                    f"UPDATE stages SET body = {mark} WHERE id = {mark}",
                    (json.dumps(row), row["id"]),
                )


def test_instance_rows_written_with_a_copy_load_and_run_the_same(make_engine, backend):
    seen: dict[str, list[tuple[Any, ...]]] = {}

    def hold(s: StageExecution) -> TaskResult:
        if s.context.get("_signal_name") is None:
            return TaskResult.suspend()
        c = s.context
        record = (s.ref_id, c["item"], c.get("items"), c["owner"], sorted(s.own_context()))
        seen.setdefault(s.execution.id, []).append(record)
        return TaskResult.success(outputs={"got": c["item"]})

    def build() -> Workflow:
        return Workflow.create(
            "tests",
            "old rows",
            [
                stage(
                    "each",
                    "hold",
                    context={"items": ["a", "b"], "owner": "fan"},
                    mi_config=MultiInstanceConfig("items", max_concurrency=1),
                )
            ],
        )

    first = make_engine(config=fast())
    first.registry.register("hold", hold)
    current, old = build(), build()
    for wf in (current, old):
        first.store.store(wf)
        first.orchestrator.start(wf)
    first.processor.process_all(timeout=30)
    first.backend.close()

    with_copies(backend, old.id)
    assert instance_rows(make_engine(), old.id)["each[0]"]["context"] == {
        "items": ["a", "b"],
        "owner": "fan",
        "item": "a",
    }
    second = make_engine(config=fast())
    second.registry.register("hold", hold)
    for i in (0, 1):
        for wf in (current, old):
            second.orchestrator.signal(wf.id, f"each[{i}]", "go")
        second.processor.process_all(timeout=30)

    results = {wf.id: second.store.retrieve(wf.id) for wf in (current, old)}
    for final in results.values():
        assert final.status is S.SUCCEEDED, final.error
        assert final.stage_by_ref_id("each").outputs["instances"] == [{"got": "a"}, {"got": "b"}]
        assert final.stage_by_ref_id("each[1]").context["items"] == ["a", "b"]
    own = ["_signal_data", "_signal_name", "item", "owner"]
    assert seen[current.id] == [
        ("each[0]", "a", None, "fan", own),
        ("each[1]", "b", None, "fan", own),
    ]
    assert seen[old.id] == seen[current.id]
