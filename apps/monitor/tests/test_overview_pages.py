"""Pages of workflow summaries equal a plain sort of every workflow, for any filters."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stabilize import StageExecution, Workflow, WorkflowStatus
from stabilize.connect import open_database
from stabilize.persistence import overview
from stabilize.persistence.store import WorkflowStore

APPS = ["a", "b", "c"]
NAMES = ["Load 1", "load 2", "Report", "100%_x", "10 x"]
STATUSES = [s.value for s in WorkflowStatus]

Row = tuple[str, str, str, str, int]
"""id, application, name, status, created_at."""


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorkflowStore, list[Row]]:
    """80 workflows; many share a creation time, so ties are broken by id."""
    path: Path = tmp_path_factory.mktemp("pages") / "pages.db"
    store, _ = open_database(f"sqlite:///{path}")
    rng = random.Random(7)
    rows: list[Row] = []
    with store.backend.transaction() as tx:
        for _ in range(80):
            wf = Workflow.create(
                application=rng.choice(APPS),
                name=rng.choice(NAMES),
                stages=[StageExecution(ref_id="s", type="work")],
            )
            wf.status = WorkflowStatus(rng.choice(STATUSES))
            created = 1_000 + rng.randrange(20) * 1000
            tx.insert_workflow(wf, created)
            rows.append((wf.id, wf.application, wf.name, wf.status.value, created))
    return store, rows


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    application=st.none() | st.sampled_from(APPS),
    statuses=st.none() | st.lists(st.sampled_from(STATUSES), min_size=1, max_size=4, unique=True),
    name=st.none() | st.sampled_from(["load", "%_", "0 ", "zzz"]),
    since=st.none() | st.integers(0, 25_000),
    limit=st.integers(0, 90),
    offset=st.integers(0, 90),
)
@example(application=None, statuses=None, name=None, since=None, limit=90, offset=0)
@example(application="a", statuses=["RUNNING"], name="%_", since=None, limit=3, offset=1)
def test_a_page_is_a_slice_of_the_sorted_workflows(
    stored: tuple[WorkflowStore, list[Row]],
    application: str | None,
    statuses: list[str] | None,
    name: str | None,
    since: int | None,
    limit: int,
    offset: int,
) -> None:
    store, rows = stored
    expected = sorted(
        (
            r
            for r in rows
            if (application is None or r[1] == application)
            and (statuses is None or r[3] in statuses)
            and (name is None or name.lower() in r[2].lower())
            and (since is None or r[4] >= since)
        ),
        key=lambda r: (r[4], r[0]),
        reverse=True,
    )[offset : offset + limit]
    page = overview.summarize_workflows(
        store,
        application=application,
        status=statuses,
        name=name,
        created_since=since,
        limit=limit,
        offset=offset,
    )
    assert [s.id for s in page] == [r[0] for r in expected]
    assert all(s.stages_total == 1 for s in page)
