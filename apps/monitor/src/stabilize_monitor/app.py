"""The Textual app: the workflows table, the queue and workers panel, and its screens.

Data is read from a :class:`~stabilize_monitor.Source` only when something may have
changed: the source's watcher (the event log's wake-ups) or, as a fallback, a poll of its
cheap change marker every ``refresh`` seconds. Bursts of commits are coalesced into at
most one reread per :data:`MIN_REFRESH_S`.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Footer, Input, Sparkline, Static

from stabilize_monitor._model import STATUS_FILTERS, Filters, QueueStats, Source, WorkflowRow
from stabilize_monitor._text import format_duration, format_progress, format_time

MIN_REFRESH_S = 0.25
"""Shortest time between two rereads of the source (commits may come by the thousand)."""

PAGE_SIZE = 100
"""Workflows listed at once (the newest that pass the filters)."""

HISTORY = 120
"""Samples kept for the charts (one per reread, at least :data:`SAMPLE_S` apart)."""

SAMPLE_S = 5.0
"""Shortest time between two samples of the charts (counting finished stages reads every
stage row, so it is not done on every commit)."""

COLUMNS = ("application", "name", "status", "progress", "started (UTC)", "duration", "current")

STATUS_STYLE = {
    "RUNNING": "bold cyan",
    "SUSPENDED": "bold yellow",
    "PAUSED": "yellow",
    "SUCCEEDED": "green",
    "TERMINAL": "bold red",
    "STOPPED": "red",
    "CANCELED": "magenta",
    "FAILED_CONTINUE": "red",
}


class Changed(Message):
    """The source says something may have changed (posted from its watcher thread)."""


class MonitorApp(App[int]):
    """The ``stabilize monitor`` dashboard.

    Args:
        source: Where to read and act (never a database handle).
        filters: The filters to start with.
        refresh: Seconds between two checks of the change marker when nothing woke the
            app (the watcher wakes it at once on commits).
        clock: Epoch seconds; fixed in tests so that frames are deterministic.
        watch: Start the source's watcher (tests that drive refreshes by hand turn it off).
    """

    TITLE = "stabilize monitor"
    CSS = """
    #title { height: 1; background: $primary-background; color: $text; padding: 0 1; }
    #workflows { height: 1fr; }
    #panel { height: 7; border-top: solid $primary; }
    #counts { width: 1fr; padding: 0 1; }
    #queue { width: 1fr; padding: 0 1; }
    #charts { width: 1fr; padding: 0 1; }
    #charts Sparkline { height: 2; }
    #search { dock: bottom; display: none; }
    #search.active { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_monitor", "Quit"),
        Binding("r", "refresh", "Refresh"),
        Binding("slash", "search", "Search"),
        Binding("a", "next_application", "App"),
        Binding("s", "next_status", "Status"),
        Binding("enter", "open_workflow", "Open", show=True),
        Binding("escape", "clear_search", "Clear", show=False),
    ]

    def __init__(
        self,
        source: Source,
        *,
        filters: Filters | None = None,
        refresh: float = 2.0,
        clock: Callable[[], float] = time.time,
        watch: bool = True,
    ) -> None:
        super().__init__()
        self.source = source
        self.filters = filters or Filters()
        self.refresh_interval = refresh
        self.clock = clock
        self.watching = watch
        self.rows: list[WorkflowRow] = []
        self.stats = QueueStats()
        self.depth_history: deque[float] = deque(maxlen=HISTORY)
        self.finished_history: deque[float] = deque(maxlen=HISTORY)
        self._last_finished: tuple[float, int] | None = None
        self._last_sample = 0.0
        self._last_read = 0.0
        self._pending = False
        self._marker: Any = None
        self._stop_watch: Callable[[], None] | None = None
        self.reads = 0
        """How many times the source was reread (tests check that idle means none)."""

    def compose(self) -> ComposeResult:
        """The title line, the workflows table, the panel and the search box."""
        yield Static(id="title")
        table: DataTable[Any] = DataTable(id="workflows", cursor_type="row", zebra_stripes=True)
        yield table
        with Horizontal(id="panel"):
            yield Static(id="counts")
            yield Static(id="queue")
            with Vertical(id="charts"):
                yield Static("queue depth", id="depth-label")
                yield Sparkline(list(self.depth_history), id="depth-chart")
                yield Static("stages finished/s", id="rate-label")
                yield Sparkline(list(self.finished_history), id="rate-chart")
        yield Input(placeholder="search workflow names (enter: apply, escape: clear)", id="search")
        yield Footer()

    def on_mount(self) -> None:
        """Read once, then follow the source's wake-ups and poll its marker slowly."""
        table = self.query_one("#workflows", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.reload()
        self.set_interval(self.refresh_interval, self._check_marker)
        if self.watching:
            self._stop_watch = self.source.watch(self._wake)

    def _wake(self) -> None:
        self.post_message(Changed())  # thread-safe: the watcher calls this from its thread

    def on_unmount(self) -> None:
        """Stop the watcher thread."""
        if self._stop_watch is not None:
            self._stop_watch()
            self._stop_watch = None

    # -- reading ----------------------------------------------------------------------

    def on_changed(self, message: Changed) -> None:
        """Coalesce wake-ups: reread now, or once when the minimum interval has passed."""
        if self._pending:
            return
        wait = self._last_read + MIN_REFRESH_S - time.monotonic()
        if wait <= 0:
            self.reload()
        else:
            self._pending = True
            self.set_timer(wait, self._deferred_reload)

    def _deferred_reload(self) -> None:
        self._pending = False
        self.reload()

    def _check_marker(self) -> None:
        try:
            marker = self.source.marker()
        except Exception as exc:
            self.notify(f"cannot read the database: {exc}", severity="error")
            return
        if marker != self._marker:
            self.reload()

    def reload(self) -> None:
        """Reread the source and redraw the table, the panel and the open screen."""
        if not self.screen_stack or not self.screen_stack[0].query("#title"):
            return  # shutting down: a deferred reload fired after the widgets were removed
        self._last_read = time.monotonic()
        self.reads += 1
        now = self.clock()
        try:
            self._marker = self.source.marker()
            self.rows = self.source.workflows(self.filters, PAGE_SIZE, now)
            counts = self.source.counts(self.filters.application)
            self.stats = self.source.queue_stats(now)
        except Exception as exc:
            self.notify(f"cannot read the database: {exc}", severity="error")
            return
        self._sample(counts)
        self._draw_title()
        self._draw_table(now)
        self._draw_panel(counts)
        screen = self.screen
        refresh = getattr(screen, "reload", None)
        if screen is not self.screen_stack[0] and callable(refresh):
            refresh()

    def _sample(self, counts: dict[str, int]) -> None:
        now = time.monotonic()
        if self.depth_history and now - self._last_sample < SAMPLE_S:
            return
        first = not self.depth_history
        self._last_sample = now
        self.depth_history.append(float(self.stats.depth))
        if first:
            return  # the first frame waits for no count of every stage row
        finished = self.stats_finished()
        if finished is not None:
            if self._last_finished is not None:
                then, before = self._last_finished
                rate = max(0, finished - before) / max(now - then, 1e-3)
                self.finished_history.append(rate)
            self._last_finished = (now, finished)

    def stats_finished(self) -> int | None:
        """Stages finished so far, when the source can tell (for the rate chart)."""
        finished = getattr(self.source, "finished_stages", None)
        return int(finished()) if callable(finished) else None

    # -- drawing ----------------------------------------------------------------------

    def _draw_title(self) -> None:
        title = f"stabilize monitor  {self.source.location}  |  {self.filters.describe()}"
        self.query_one("#title", Static).update(title)

    def _draw_table(self, now: float) -> None:
        table: DataTable[Any] = self.query_one("#workflows", DataTable)
        selected = self.selected_workflow_id()
        table.clear()
        for row in self.rows:
            table.add_row(*self._cells(row, now), key=row.id)
        if selected is not None:
            for index, row in enumerate(self.rows):
                if row.id == selected:
                    table.move_cursor(row=index)
                    break

    def _cells(self, row: WorkflowRow, now: float) -> tuple[Any, ...]:
        from rich.text import Text

        return (
            row.application,
            row.name,
            Text(row.status, style=STATUS_STYLE.get(row.status, "")),
            format_progress(row),
            format_time(row.start_time),
            format_duration(row, now),
            ",".join(row.current_stages) or "-",
        )

    def _draw_panel(self, counts: dict[str, int]) -> None:
        total = sum(counts.values())
        lines = [f"workflows: {total}"]
        lines += [f"  {status}: {n}" for status, n in sorted(counts.items())]
        self.query_one("#counts", Static).update("\n".join(lines[:6]))
        s = self.stats
        queue_lines = [
            f"queue: {s.ready} ready, {s.delayed} delayed",
            f"leased: {s.leased}  dead letters: {s.dead_letters}",
        ]
        if s.leases_by_owner:
            queue_lines += [f"  {owner}: {n}" for owner, n in sorted(s.leases_by_owner.items())]
        else:
            queue_lines.append("  no worker holds a lease")
        self.query_one("#queue", Static).update("\n".join(queue_lines[:6]))
        depth = list(self.depth_history)
        rate = list(self.finished_history)
        peak = f" (max {max(depth):.0f})" if depth else ""
        self.query_one("#depth-label", Static).update(f"queue depth: {s.depth}{peak}")
        now_rate = f": {rate[-1]:.1f}" if rate else ": -"
        self.query_one("#rate-label", Static).update(f"stages finished/s{now_rate}")
        self.query_one("#depth-chart", Sparkline).data = depth
        self.query_one("#rate-chart", Sparkline).data = rate

    # -- actions ----------------------------------------------------------------------

    def selected_workflow_id(self) -> str | None:
        """The id of the workflow under the table's cursor, if any."""
        table: DataTable[Any] = self.query_one("#workflows", DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return None if key.value is None else str(key.value)

    def action_quit_monitor(self) -> None:
        """Quit with status 0."""
        self.exit(0)

    def action_refresh(self) -> None:
        """Reread the source now."""
        self.reload()

    def action_search(self) -> None:
        """Show the search box."""
        box = self.query_one("#search", Input)
        box.add_class("active")
        box.focus()

    def action_clear_search(self) -> None:
        """Hide the search box and list every name again."""
        box = self.query_one("#search", Input)
        box.value = ""
        box.remove_class("active")
        self.query_one("#workflows", DataTable).focus()
        if self.filters.search:
            self.set_filters(search="")

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as the operator types."""
        if event.input.id == "search":
            self.set_filters(search=event.value.strip())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Keep the search and go back to the table."""
        if event.input.id == "search":
            if not event.value.strip():
                event.input.remove_class("active")
            self.query_one("#workflows", DataTable).focus()

    def action_next_application(self) -> None:
        """Cycle the application filter: all, then each application in turn."""
        choices: list[str | None] = [None, *self.source.applications()]
        current = (
            choices.index(self.filters.application) if self.filters.application in choices else 0
        )
        self.set_filters(application=choices[(current + 1) % len(choices)])

    def action_next_status(self) -> None:
        """Cycle the status filter: all, running, failed, recent."""
        names = list(STATUS_FILTERS)
        self.set_filters(status=names[(names.index(self.filters.status) + 1) % len(names)])

    def set_filters(self, **changes: Any) -> None:
        """Change the filters and reread."""
        self.filters = dataclasses.replace(self.filters, **changes)
        self.reload()

    def action_open_workflow(self) -> None:
        """Open the workflow under the cursor."""
        workflow_id = self.selected_workflow_id()
        if workflow_id is None:
            return
        from stabilize_monitor._detail import WorkflowScreen

        self.push_screen(WorkflowScreen(workflow_id))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click) on a row opens its workflow."""
        if event.data_table.id == "workflows":
            self.action_open_workflow()
