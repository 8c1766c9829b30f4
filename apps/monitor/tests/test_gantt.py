"""The text timeline: stage runs read from the event log, and the bars drawn from them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from monitor_support import FIXED_NOW, FakeSource, row
from textual.pilot import Pilot

from stabilize.models.event import Event
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.models.workflow import Workflow
from stabilize_monitor._gantt import StageRun, gantt_lines, stage_runs
from stabilize_monitor.app import STATUS_STYLE, MonitorApp

T0 = int(FIXED_NOW * 1000) - 60_000
"""The workflow started a minute before the fixed clock."""


def workflow() -> Workflow:
    stages = [
        StageExecution(ref_id="fetch", type="work", status=WorkflowStatus.SUCCEEDED),
        StageExecution(
            ref_id="check",
            type="work",
            requisite_stage_ref_ids={"fetch"},
            status=WorkflowStatus.RUNNING,
        ),
        StageExecution(
            ref_id="render",
            type="work",
            requisite_stage_ref_ids={"fetch"},
            status=WorkflowStatus.SUCCEEDED,
        ),
    ]
    wf = Workflow(id="wf_9", application="reports", name="Looping report", stages=stages)
    wf.status = WorkflowStatus.RUNNING
    return wf


def log(wf: Workflow) -> list[Event]:
    """fetch runs; check fails a task once (retry), loops back once, runs again (still)."""
    fetch, check, render = (wf.stage_by_ref_id(r).id for r in ("fetch", "check", "render"))
    steps: list[tuple[int, str, str, dict[str, Any]]] = [
        (0, "stage.started", fetch, {"ref_id": "fetch"}),
        (10_000, "stage.completed", fetch, {"status": "SUCCEEDED"}),
        (10_000, "stage.started", check, {"ref_id": "check"}),
        (10_000, "stage.started", render, {"ref_id": "render"}),
        (15_000, "task.retried", "t1", {"stage_id": check, "attempt": 1}),
        (25_000, "stage.completed", render, {"status": "SUCCEEDED"}),
        (30_000, "jump.executed", check, {"source": "check", "target": "check"}),
        (30_000, "stage.started", check, {"ref_id": "check"}),
    ]
    return [
        Event("wf_9", i + 1, kind, "stage", entity, T0 + at, data)
        for i, (at, kind, entity, data) in enumerate(steps)
    ]


def test_runs_come_from_the_log_with_loop_passes_and_retries() -> None:
    wf = workflow()
    runs = stage_runs(wf, log(wf))
    assert [(r.ref_id, r.start - T0, r.end, r.status, r.retries) for r in runs] == [
        ("fetch", 0, T0 + 10_000, "SUCCEEDED", 0),
        ("check", 10_000, T0 + 30_000, "REDIRECT", 1),
        ("render", 10_000, T0 + 25_000, "SUCCEEDED", 0),
        ("check", 30_000, None, "RUNNING", 0),
    ]


def test_without_events_the_stages_own_times_make_the_runs() -> None:
    wf = workflow()
    wf.stages[0].start_time, wf.stages[0].end_time = T0, T0 + 5_000
    runs = stage_runs(wf, [])
    assert [(r.ref_id, r.start, r.end, r.status) for r in runs] == [
        ("fetch", T0, T0 + 5_000, "SUCCEEDED")
    ]


def test_a_running_bar_grows_with_the_clock() -> None:
    wf = workflow()
    runs = stage_runs(wf, log(wf))
    early = gantt_lines(wf, runs, T0 + 40_000, 80, {})
    late = gantt_lines(wf, runs, T0 + 80_000, 80, {})
    check_early = next(line.plain for line in early if line.plain.startswith("check"))
    check_late = next(line.plain for line in late if line.plain.startswith("check"))
    assert "2 runs" in check_late
    assert "↻1" in check_late
    # The axis stretched: the finished bar (fetch) shrank, the running one still reaches now.
    fetch_early = next(line.plain for line in early if line.plain.startswith("fetch"))
    fetch_late = next(line.plain for line in late if line.plain.startswith("fetch"))
    assert fetch_late.count("█") < fetch_early.count("█")
    assert "▓ 10.0s RUNNING" in check_early  # the running bar reaches now, then its note


runs_strategy = st.lists(
    st.tuples(
        st.sampled_from(["fetch", "check", "render", "a-very-long-stage-name-indeed"]),
        st.integers(0, 10**7),
        st.one_of(st.none(), st.integers(0, 10**7)),
        st.sampled_from(["SUCCEEDED", "TERMINAL", "RUNNING", "CANCELED"]),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(runs=runs_strategy, width=st.integers(0, 200), extra=st.integers(0, 10**6))
@example(runs=[("fetch", 5, 5, "SUCCEEDED")], width=0, extra=0)
def test_every_line_fits_and_every_run_gets_a_cell(
    runs: list[tuple[str, int, int | None, str]], width: int, extra: int
) -> None:
    wf = workflow()
    made = [
        StageRun(ref, start, None if end is None else start + end, status)
        for ref, start, end, status in runs
    ]
    now = max((r.start for r in made), default=0) + extra
    lines = gantt_lines(wf, made, now, width, STATUS_STYLE)
    if not made:
        assert [line.plain for line in lines] == ["no stage has started yet"]
        return
    assert len(lines) == 1 + len({r.ref_id for r in made})
    widths = {len(line.plain) for line in lines[1:]}
    if width >= 17 + 10 + 40:  # room for the bars and the longest note
        assert max(widths) <= width, [line.plain for line in lines]
    for line in lines[1:]:
        assert any(c in "█▓" for c in line.plain[17:]), line.plain  # even a 0 ms run shows


def test_workflow_screen_timeline(
    snap_compare: Callable[..., bool], fake_source: FakeSource
) -> None:
    wf = workflow()
    fake_source.rows.insert(0, row("wf_9", "Looping report", "RUNNING", application="reports"))
    fake_source.workflows_by_id["wf_9"] = wf
    fake_source.event_log["wf_9"] = log(wf)

    async def open_it(pilot: Pilot[Any]) -> None:
        await pilot.press("enter")
        pilot.app.screen.operator = "alice"  # type: ignore[attr-defined]

    app = MonitorApp(fake_source, clock=lambda: FIXED_NOW, watch=False)
    assert snap_compare(app, terminal_size=(110, 30), run_before=open_it)
