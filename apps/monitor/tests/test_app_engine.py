"""Pilot drives the app on real databases while a worker runs real workflows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from monitor_support import FLAKY_RUNS, Engine, flaky_workflow, gated_workflow, plain_workflow
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from stabilize_monitor._detail import WorkflowScreen
from stabilize_monitor.app import MonitorApp


async def until(pilot: Pilot[Any], condition: Callable[[], bool], what: str) -> None:
    """Let the app run until ``condition()`` holds; the deadline only guards against hangs."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def cell(app: MonitorApp, workflow_id: str, column: int) -> str:
    table: DataTable[Any] = app.query_one("#workflows", DataTable)
    try:
        return str(table.get_row(workflow_id)[column])
    except Exception:
        return ""


def as_of(screen: WorkflowScreen) -> int | None:
    return screen.as_of  # a call: mypy would keep the attribute narrowed across key presses


def title(screen: WorkflowScreen) -> str:
    return str(screen.query_one("#wf-title", Static).render())


async def test_navigate_filter_open_and_approve_a_real_gate(engine: Engine) -> None:
    app = MonitorApp(engine.source, refresh=0.5)
    async with app.run_test(size=(140, 36)) as pilot:
        report = engine.start(plain_workflow())
        gated = engine.start(gated_workflow())
        # Commits wake the app: no key press needed to see them.
        await until(pilot, lambda: cell(app, gated.id, 6) == "approve", "the gate to wait")
        await until(pilot, lambda: cell(app, report.id, 2) == "SUCCEEDED", "the report")
        assert cell(app, gated.id, 3) == "1/3"

        await pilot.press("s", "s")  # failed: nothing failed
        await until(pilot, lambda: app.query_one("#workflows", DataTable).row_count == 0, "empty")
        await pilot.press("s", "s")  # back to all
        await pilot.press("a")  # billing
        assert app.filters.application == "billing"
        table: DataTable[Any] = app.query_one("#workflows", DataTable)
        assert [str(k.value) for k in table.rows] == [gated.id]

        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, WorkflowScreen)
        assert screen.workflow_id == gated.id
        stages: DataTable[Any] = screen.query_one("#stages", DataTable)
        assert [str(k.value) for k in stages.rows] == ["fetch", "approve", "send"]
        assert "frontier: approve" in title(screen)

        await pilot.press("down")  # the gate
        screen.operator = "alice"
        await pilot.press("y")
        await pilot.press(*"numbers check out", "enter")
        await until(pilot, lambda: "SUCCEEDED" in title(screen), "the approved workflow to finish")
        assert engine.status(gated.id) == "SUCCEEDED"
        outputs = engine.source.workflow(gated.id).stage_by_ref_id("approve").outputs
        assert outputs["approved_by"] == "alice"
        assert outputs["approval"] == {"note": "numbers check out"}

        await pilot.press("q")
    assert app.return_code == 0


async def test_scrub_a_real_workflow_through_its_event_log(engine: Engine) -> None:
    wf = engine.start(plain_workflow())
    app = MonitorApp(engine.source, refresh=0.5)
    async with app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: cell(app, wf.id, 2) == "SUCCEEDED", "the workflow to finish")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, WorkflowScreen)
        last = screen.events[-1].sequence
        for _ in range(last):
            await pilot.press("left_square_bracket")
        assert as_of(screen) == 1
        assert f"as of event 1/{last} workflow.created" in title(screen)
        stages: DataTable[Any] = screen.query_one("#stages", DataTable)
        assert {str(stages.get_row(ref)[1]) for ref in ("a", "b", "c")} == {"NOT_STARTED"}
        await pilot.press("right_square_bracket")
        assert as_of(screen) == 2
        await pilot.press("l")
        assert as_of(screen) is None
        assert {str(stages.get_row(ref)[1]) for ref in ("a", "b", "c")} == {"SUCCEEDED"}


async def test_a_refused_action_says_why_and_changes_nothing(engine: Engine) -> None:
    wf = engine.start(plain_workflow())
    app = MonitorApp(engine.source, refresh=0.5)
    async with app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: cell(app, wf.id, 2) == "SUCCEEDED", "the workflow to finish")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, WorkflowScreen)
        await pilot.press("y", "enter")  # approve stage 'a', which is no gate and finished
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any(m.startswith("refused: ") and "'a'" in m for m in messages), messages
        assert engine.status(wf.id) == "SUCCEEDED"


async def test_restart_a_failed_stage_and_watch_it_finish(engine: Engine) -> None:
    wf = engine.start(flaky_workflow())
    app = MonitorApp(engine.source, refresh=0.5)
    async with app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: cell(app, wf.id, 2) == "TERMINAL", "the workflow to fail")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, WorkflowScreen)
        timeline = str(screen.query_one("#timeline").render())
        assert "b" in timeline
        assert "TERMINAL" in timeline
        await pilot.press("down")  # stage b, the failed one
        assert screen.selected_ref() == "b"
        screen.operator = "alice"
        await pilot.press("R")
        await pilot.press(*"fixed the input", "enter")
        await until(pilot, lambda: "SUCCEEDED" in title(screen), "the restarted workflow to finish")
        done = engine.source.workflow(wf.id)
        assert [s.status.value for s in done.stages] == ["SUCCEEDED"] * 3
        assert FLAKY_RUNS[done.stage_by_ref_id("b").id] == 2
        restarted = [e for e in engine.source.events(wf.id) if e.event_type == "stage.restarted"]
        assert [e.data["user"] for e in restarted] == ["alice"]
        # The timeline shows both runs of b, the failed one and the one that succeeded.
        await until(
            pilot, lambda: "2 runs" in str(screen.query_one("#timeline").render()), "b's two runs"
        )


async def test_a_refused_restart_says_why_and_changes_nothing(engine: Engine) -> None:
    wf = engine.start(gated_workflow())
    app = MonitorApp(engine.source, refresh=0.5)
    async with app.run_test(size=(140, 36)) as pilot:
        await until(pilot, lambda: cell(app, wf.id, 6) == "approve", "the gate to wait")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, WorkflowScreen)
        before = engine.source.workflow(wf.id).to_dict()
        await pilot.press("down")  # the gate, SUSPENDED
        await pilot.press("R", "enter")

        def refused() -> bool:
            return any(
                n.message.startswith("refused: ")
                and "'approve'" in n.message
                and "SUSPENDED" in n.message
                for n in app._notifications
            )

        # The confirmation dialog closes, then its callback tries the restart: wait for the
        # answer (one pause was not always enough on a loaded machine).
        await until(pilot, refused, "the refusal")
        assert engine.source.workflow(wf.id).to_dict() == before
        assert engine.stage_status(wf.id, "approve") == "SUSPENDED"
