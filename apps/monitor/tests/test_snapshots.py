"""Frames of the main screens: fixed data, a fixed clock, a fixed terminal size.

A changed frame fails until its baseline is re-accepted:
``uv run pytest apps/monitor/tests/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor_support import FIXED_NOW, FakeSource, detail_workflow
from textual.pilot import Pilot

from stabilize_monitor import Filters
from stabilize_monitor._detail import WorkflowScreen
from stabilize_monitor.app import MonitorApp

SIZE = (110, 30)


def make_app(source: FakeSource, **kwargs: Any) -> MonitorApp:
    return MonitorApp(source, clock=lambda: FIXED_NOW, watch=False, **kwargs)


async def no_operator(pilot: Pilot[Any]) -> None:
    screen = pilot.app.screen
    if isinstance(screen, WorkflowScreen):
        screen.operator = "alice"  # not the user running the tests


def test_workflows_table(snap_compare: Callable[..., bool], fake_source: FakeSource) -> None:
    assert snap_compare(make_app(fake_source), terminal_size=SIZE)


def test_workflows_filtered_by_application(
    snap_compare: Callable[..., bool], fake_source: FakeSource
) -> None:
    app = make_app(fake_source, filters=Filters(application="billing", status="running"))
    assert snap_compare(app, terminal_size=SIZE)


def test_workflow_screen(snap_compare: Callable[..., bool], fake_source: FakeSource) -> None:
    detail_workflow(fake_source)
    assert snap_compare(
        make_app(fake_source), terminal_size=SIZE, press=["down", "enter", "down", "down"]
    )


def test_workflow_screen_in_the_past(
    snap_compare: Callable[..., bool], fake_source: FakeSource
) -> None:
    detail_workflow(fake_source)
    assert snap_compare(
        make_app(fake_source), terminal_size=SIZE, press=["down", "enter", "left_square_bracket"]
    )


def test_confirm_dialog(snap_compare: Callable[..., bool], fake_source: FakeSource) -> None:
    detail_workflow(fake_source)

    async def open_dialog(pilot: Pilot[Any]) -> None:
        await pilot.press("down", "enter", "down", "down")
        await no_operator(pilot)
        await pilot.press("x")

    assert snap_compare(make_app(fake_source), terminal_size=SIZE, run_before=open_dialog)
