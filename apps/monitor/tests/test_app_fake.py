"""The app's own logic, driven by Pilot against a source with fixed data."""

from __future__ import annotations

from typing import Any

from monitor_support import FIXED_NOW, FakeSource, detail_workflow, row
from textual.widgets import DataTable, Input, Static

from stabilize_monitor import Filters
from stabilize_monitor._detail import WorkflowScreen
from stabilize_monitor.app import MonitorApp


def make_app(source: FakeSource, **kwargs: Any) -> MonitorApp:
    return MonitorApp(source, clock=lambda: FIXED_NOW, watch=False, **kwargs)


def filters(app: MonitorApp) -> Filters:
    return app.filters  # a call: mypy would keep an attribute narrowed across key presses


def as_of(screen: WorkflowScreen) -> int | None:
    return screen.as_of


def table_ids(app: MonitorApp) -> list[str]:
    table: DataTable[Any] = app.query_one("#workflows", DataTable)
    return [str(key.value) for key in table.rows]


async def test_lists_workflows_newest_first_with_their_columns(fake_source: FakeSource) -> None:
    app = make_app(fake_source)
    async with app.run_test(size=(120, 30)):
        table: DataTable[Any] = app.query_one("#workflows", DataTable)
        assert table_ids(app) == ["wf_3", "wf_2", "wf_1"]
        cells = [str(c) for c in table.get_row("wf_3")]
        assert cells == [
            "billing",
            "Invoice run",
            "SUSPENDED",
            "1/3",
            "01-15 07:57:55",
            "2m05s",
            "approve",
        ]
        assert str(table.get_row("wf_1")[5]) == "1m05s"  # ended: its own duration


async def test_refresh_shows_new_rows(fake_source: FakeSource) -> None:
    app = make_app(fake_source)
    async with app.run_test(size=(100, 20)) as pilot:
        fake_source.rows.insert(0, row("wf_4", "Backfill", "RUNNING"))
        await pilot.press("r")
        await pilot.pause()
        assert table_ids(app)[0] == "wf_4"


async def test_status_and_application_filters_cycle(fake_source: FakeSource) -> None:
    app = make_app(fake_source)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.press("s")  # running
        assert filters(app).status == "running"
        assert table_ids(app) == ["wf_3", "wf_2"]
        await pilot.press("s")  # failed
        assert table_ids(app) == ["wf_1"]
        await pilot.press("s", "s")  # recent, then all again
        assert filters(app).status == "all"
        await pilot.press("a")
        assert filters(app).application == "billing"
        assert table_ids(app) == ["wf_3", "wf_1"]
        await pilot.press("a")
        assert table_ids(app) == ["wf_2"]
        await pilot.press("a")
        assert filters(app).application is None
        assert "app: all" in str(app.query_one("#title", Static).render())


async def test_search_filters_by_name_as_you_type_and_escape_clears(
    fake_source: FakeSource,
) -> None:
    app = make_app(fake_source)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.press("slash")
        assert app.query_one("#search", Input).has_focus
        await pilot.press(*"NIGHT")
        assert filters(app).search == "NIGHT"
        assert table_ids(app) == ["wf_2"]
        await pilot.press("escape")
        assert filters(app).search == ""
        assert table_ids(app) == ["wf_3", "wf_2", "wf_1"]


async def test_filters_given_at_start_apply(fake_source: FakeSource) -> None:
    app = make_app(fake_source, filters=Filters(application="reports"))
    async with app.run_test(size=(100, 20)):
        assert table_ids(app) == ["wf_2"]


async def test_panel_shows_queue_workers_and_dead_letters(fake_source: FakeSource) -> None:
    app = make_app(fake_source)
    async with app.run_test(size=(100, 20)):
        queue = str(app.query_one("#queue", Static).render())
        assert "4 ready, 2 delayed" in queue
        assert "leased: 3  dead letters: 1" in queue
        assert "w-1: 3" in queue
        counts = str(app.query_one("#counts", Static).render())
        assert "workflows: 3" in counts
        assert "SUSPENDED: 1" in counts


async def test_q_quits_with_status_zero(fake_source: FakeSource) -> None:
    app = make_app(fake_source)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.press("q")
    assert app.return_code == 0


async def test_marker_poll_rereads_only_when_something_changed(fake_source: FakeSource) -> None:
    app = make_app(fake_source)
    async with app.run_test(size=(100, 20)) as pilot:
        reads = fake_source.reads
        app._check_marker()
        await pilot.pause()
        assert fake_source.reads == reads  # nothing changed: nothing reread
        fake_source.rows.append(row("wf_0", "Old", "SUCCEEDED"))
        app._check_marker()
        await pilot.pause()
        assert fake_source.reads == reads + 1
        assert "wf_0" in table_ids(app)


async def test_open_a_workflow_shows_graph_join_progress_and_stage(
    fake_source: FakeSource,
) -> None:
    source = detail_workflow(fake_source)
    app = make_app(source)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("down", "enter")
        screen = app.screen
        assert isinstance(screen, WorkflowScreen)
        assert screen.workflow_id == "wf_2"
        table: DataTable[Any] = screen.query_one("#stages", DataTable)
        assert [str(k.value) for k in table.rows] == ["a", "b", "c", "d", "merge"]
        assert str(table.get_row("merge")[2]) == "1 of 2 (of 3) N_OF_M"
        assert str(table.get_row("merge")[0]) == "    merge"
        title = str(screen.query_one("#wf-title", Static).render())
        assert "frontier: c, d" in title
        assert "live (event 3)" in title
        await pilot.press("down", "down")
        info = str(screen.query_one("#stage-info", Static).render())
        assert "city: Oslo" in info
        assert "half way" in info
        await pilot.press("escape")
        assert not isinstance(app.screen, WorkflowScreen)


async def test_scrub_back_shows_the_replayed_state(fake_source: FakeSource) -> None:
    source = detail_workflow(fake_source)
    app = make_app(source)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("down", "enter")
        screen = app.screen
        assert isinstance(screen, WorkflowScreen)
        await pilot.press("left_square_bracket")
        assert as_of(screen) == 2
        title = str(screen.query_one("#wf-title", Static).render())
        assert "as of event 2/3 stage.started" in title
        table: DataTable[Any] = screen.query_one("#stages", DataTable)
        assert [str(k.value) for k in table.rows] == ["a"]
        await pilot.press("l")
        assert as_of(screen) is None
        assert len(table.rows) == 5


async def test_actions_ask_to_confirm_and_can_be_canceled(fake_source: FakeSource) -> None:
    source = detail_workflow(fake_source)
    app = make_app(source)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("down", "enter", "down", "down")  # stage c
        await pilot.press("x")
        await pilot.press("escape")  # canceled: nothing done
        assert source.calls == []
        await pilot.press("x")
        await pilot.press(*"too slow", "enter")
        assert source.calls[-1][:3] == ("cancel_stage", "wf_2", "c")
        assert source.calls[-1][4] == "too slow"
        await pilot.press("p", "enter")
        assert source.calls[-1] == ("pause", "wf_2")
