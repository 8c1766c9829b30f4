"""Reading several stages at once: the processor's check of its running tasks.

The check reads the rows of the running tasks' stages, never whole workflows (issue 13),
and all of them in one read: on PostgreSQL one statement, not one round trip per task.
"""

from __future__ import annotations

from typing import Any

from stabilize import StageExecution, TaskExecution, TaskResult, Workflow


class CountingCursor:
    """A cursor that counts the statements sent through it."""

    def __init__(self, cur: Any) -> None:
        self.cur = cur
        self.statements = 0

    def execute(self, sql: str, params: Any = (), /) -> Any:
        self.statements += 1
        return self.cur.execute(sql, params)

    def fetchone(self) -> Any:
        return self.cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.cur.fetchall())


def three_stages() -> Workflow:
    return Workflow.create(
        application="tests",
        name="read",
        stages=[
            StageExecution(
                ref_id=ref,
                type="work",
                name=ref,
                context={"n": i},
                tasks=[TaskExecution.create(ref, "work", stage_start=True, stage_end=True)],
            )
            for i, ref in enumerate("abc")
        ],
    )


def test_read_stages_gives_fresh_copies_of_the_stages_that_exist(make_engine):
    engine = make_engine()
    engine.registry.register("work", lambda stage: TaskResult.success())
    wf = three_stages()
    engine.store.store(wf)
    a, _, c = wf.stages

    with engine.backend.read() as tx:
        found = tx.read_stages([c.id, "no-such-stage", a.id, c.id])

    assert sorted(found) == sorted([a.id, c.id])
    assert found[a.id] is not a
    assert (found[a.id].ref_id, found[a.id].context) == ("a", {"n": 0})
    assert [t.id for t in found[c.id].tasks] == [t.id for t in c.tasks]
    with engine.backend.read() as tx:
        assert tx.read_stages([]) == {}


def test_the_stages_are_read_in_one_statement_where_each_is_a_round_trip(make_engine):
    engine = make_engine()
    engine.registry.register("work", lambda stage: TaskResult.success())
    wf = three_stages()
    engine.store.store(wf)

    with engine.backend.read() as tx:
        counting = CountingCursor(tx.cur)
        tx.cur = counting
        found = tx.read_stages([s.id for s in wf.stages])

    assert len(found) == 3
    expected = 1 if engine.db.is_postgres else 3  # SQLite: no round trips to save
    assert counting.statements == expected
