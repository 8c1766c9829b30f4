"""One workflow: its stage graph, a stage's details, time travel and actions."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from stabilize.models.event import Event
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.models.workflow import Workflow
from stabilize_monitor._dialogs import Confirmed, ConfirmScreen
from stabilize_monitor._gantt import GanttTimeline, stage_runs
from stabilize_monitor._graph import frontier, graph_lines

if TYPE_CHECKING:
    from stabilize_monitor.app import MonitorApp

PROGRESS_SHOWN = 12
"""Progress messages of the chosen stage shown (the latest)."""


class WorkflowScreen(Screen[None]):
    """A workflow's stages and, for the chosen one, everything about it.

    Live by default; ``[`` and ``]`` step through the event log, and the graph and the
    stage show the state rebuilt from the log at that sequence (no task runs again).

    Args:
        workflow_id: The workflow to show.
    """

    CSS = """
    #wf-title { height: 2; background: $primary-background; padding: 0 1; }
    #stages { width: 3fr; }
    #stage-pane { width: 2fr; border-left: solid $primary; padding: 0 1; }
    #timeline { border-top: solid $primary; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("left_square_bracket", "step(-1)", "Earlier"),
        Binding("right_square_bracket", "step(1)", "Later"),
        Binding("l", "live", "Live"),
        Binding("y", "approve", "Approve"),
        Binding("n", "reject", "Reject"),
        Binding("g", "signal", "Signal"),
        Binding("c", "cancel_workflow", "Cancel wf"),
        Binding("x", "cancel_stage", "Cancel stage"),
        Binding("R", "restart_stage", "Restart stage"),
        Binding("p", "pause_resume", "Pause/resume"),
        Binding("q", "app.quit_monitor", "Quit", show=False),
    ]

    def __init__(self, workflow_id: str) -> None:
        super().__init__()
        self.workflow_id = workflow_id
        self.workflow: Workflow | None = None
        self.events: list[Event] = []
        self.as_of: int | None = None
        """The sequence shown when time travelling; None: live."""
        self.operator = _operator()

    @property
    def monitor(self) -> MonitorApp:
        """The app (typed)."""
        from stabilize_monitor.app import MonitorApp

        app = self.app
        assert isinstance(app, MonitorApp)
        return app

    def compose(self) -> ComposeResult:
        """The title, the graph and the stage pane."""
        yield Static(id="wf-title")
        with Horizontal():
            table: DataTable[Any] = DataTable(id="stages", cursor_type="row")
            yield table
            with VerticalScroll(id="stage-pane"):
                yield Static(id="stage-info")
        yield GanttTimeline(id="timeline")
        yield Footer()

    def on_mount(self) -> None:
        """Set up the graph's columns and read the workflow."""
        table = self.query_one("#stages", DataTable)
        for column in ("stage", "status", "join", "after", "tasks"):
            table.add_column(column, key=column)
        self.reload()
        table.focus()

    # -- reading ----------------------------------------------------------------------

    def reload(self) -> None:
        """Read new events and the workflow (live, or rebuilt at the chosen sequence)."""
        source = self.monitor.source
        try:
            since = self.events[-1].sequence if self.events else 0
            self.events.extend(
                e for e in source.events(self.workflow_id, since) if e.sequence > since
            )
            if self.as_of is None:
                self.workflow = source.workflow(self.workflow_id)
            else:
                self.workflow = source.state_at(self.workflow_id, self.as_of)
        except Exception as exc:
            self.notify(f"cannot read workflow {self.workflow_id}: {exc}", severity="error")
            return
        self._draw()

    def _draw(self) -> None:
        wf = self.workflow
        if wf is None:
            return
        table: DataTable[Any] = self.query_one("#stages", DataTable)
        chosen = self.selected_ref()
        table.clear()
        lines = graph_lines(wf)
        for line in lines:
            s = line.stage
            retries = sum(t.retry_count for t in s.tasks if hasattr(t, "retry_count"))
            tasks = f"{len(s.tasks)}" + (f" ({retries} retr.)" if retries else "")
            table.add_row(
                "  " * line.depth + s.ref_id,
                Text(s.status.value, style=_style(s.status)),
                line.join,
                ",".join(line.after) or "-",
                tasks,
                key=s.ref_id,
            )
        refs = [line.stage.ref_id for line in lines]
        if chosen in refs:
            table.move_cursor(row=refs.index(chosen))
        self._draw_title(wf)
        self._draw_stage()
        self._draw_timeline(wf)

    def _draw_timeline(self, wf: Workflow) -> None:
        shown = [e for e in self.events if self.as_of is None or e.sequence <= self.as_of]
        if self.as_of is None:
            now = int(self.monitor.clock() * 1000)
        else:  # as of an event: running bars end at its time
            now = shown[-1].timestamp if shown else 0
        self.query_one("#timeline", GanttTimeline).show(wf, stage_runs(wf, shown), now)

    def _draw_title(self, wf: Workflow) -> None:
        last = self.events[-1].sequence if self.events else 0
        if self.as_of is None:
            when = f"live (event {last})"
        else:
            event = next((e for e in self.events if e.sequence == self.as_of), None)
            kind = f" {event.event_type}" if event is not None else ""
            when = f"as of event {self.as_of}/{last}{kind}"
        active = ", ".join(frontier(wf)) or "-"
        paused = "  paused" if wf.paused else ""
        self.query_one("#wf-title", Static).update(
            f"{wf.application} / {wf.name}  {wf.id}  {wf.status.value}{paused}  [{when}]\n"
            f"frontier: {active}" + (f"  error: {wf.error}" if wf.error else "")
        )

    def selected_ref(self) -> str | None:
        """The ``ref_id`` of the stage under the cursor."""
        table: DataTable[Any] = self.query_one("#stages", DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return None if key.value is None else str(key.value)

    def selected_stage(self) -> StageExecution | None:
        """The stage under the cursor, in the state shown."""
        ref = self.selected_ref()
        if ref is None or self.workflow is None:
            return None
        return next((s for s in self.workflow.stages if s.ref_id == ref), None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Show the stage the cursor moved to."""
        self._draw_stage()

    def _draw_stage(self) -> None:
        stage = self.selected_stage()
        info = self.query_one("#stage-info", Static)
        if stage is None:
            info.update("no stage")
            return
        info.update(stage_text(stage, self._progress(stage)))

    def _progress(self, stage: StageExecution) -> list[dict[str, Any]]:
        limit = self.as_of
        return [
            e.data
            for e in self.events
            if e.event_type == "custom.progress"
            and (e.entity_id == stage.id or e.data.get("stage_id") == stage.id)
            and (limit is None or e.sequence <= limit)
        ]

    # -- time travel ------------------------------------------------------------------

    def action_step(self, delta: int) -> None:
        """Show the state one event earlier or later (leaving live mode)."""
        if not self.events:
            self.notify("no events recorded for this workflow", severity="warning")
            return
        sequences = [e.sequence for e in self.events]
        current = self.as_of if self.as_of is not None else sequences[-1]
        index = max(0, min(len(sequences) - 1, _index_at(sequences, current) + delta))
        self.as_of = sequences[index]
        self.reload()

    def action_live(self) -> None:
        """Follow the workflow as it is now."""
        self.as_of = None
        self.reload()

    def action_back(self) -> None:
        """Back to the workflows table."""
        self.app.pop_screen()

    # -- actions ----------------------------------------------------------------------

    def action_approve(self) -> None:
        """Approve the chosen (waiting) gate."""
        self._gate("approve")

    def action_reject(self) -> None:
        """Reject the chosen (waiting) gate."""
        self._gate("reject")

    def _gate(self, decision: str) -> None:
        stage = self._live_stage()
        if stage is None:
            return
        source = self.monitor.source
        act = source.approve if decision == "approve" else source.reject
        self._confirm(
            f"{decision.title()} gate {stage.ref_id!r} of workflow {self.workflow_id}?",
            lambda ok: act(self.workflow_id, stage.ref_id, ok.user, ok.note),
            f"{decision}d {stage.ref_id}",
        )

    def action_signal(self) -> None:
        """Send a named signal to the chosen stage."""
        stage = self._live_stage()
        if stage is None:
            return
        source = self.monitor.source

        def send(ok: Confirmed) -> None:
            data = {"note": ok.note} if ok.note else {}
            source.signal(self.workflow_id, stage.ref_id, ok.name, data, ok.user)

        self._confirm(
            f"Send a signal to stage {stage.ref_id!r}?",
            send,
            f"signal sent to {stage.ref_id}",
            ask_name=True,
        )

    def action_cancel_workflow(self) -> None:
        """Cancel the whole workflow."""
        source = self.monitor.source
        self._confirm(
            f"Cancel workflow {self.workflow_id}?",
            lambda ok: source.cancel(self.workflow_id, ok.user, ok.note),
            "workflow canceled",
        )

    def action_cancel_stage(self) -> None:
        """Cancel the chosen stage."""
        stage = self._live_stage()
        if stage is None:
            return
        source = self.monitor.source
        self._confirm(
            f"Cancel stage {stage.ref_id!r} of workflow {self.workflow_id}?",
            lambda ok: source.cancel_stage(self.workflow_id, stage.ref_id, ok.user, ok.note),
            f"stage {stage.ref_id} canceled",
        )

    def action_restart_stage(self) -> None:
        """Run the chosen (finished) stage again, and everything downstream of it."""
        stage = self._live_stage()
        if stage is None:
            return
        source = self.monitor.source
        self._confirm(
            f"Restart stage {stage.ref_id!r} of workflow {self.workflow_id} "
            "(it and the stages after it run again)?",
            lambda ok: source.restart(self.workflow_id, stage.ref_id, ok.user),
            f"stage {stage.ref_id} restarted",
        )

    def action_pause_resume(self) -> None:
        """Pause a running workflow, or resume a paused one."""
        if self.workflow is None:
            return
        source = self.monitor.source
        if self.workflow.paused or self.workflow.status is WorkflowStatus.PAUSED:
            self._confirm(
                f"Resume workflow {self.workflow_id}?",
                lambda ok: source.resume(self.workflow_id),
                "workflow resumed",
            )
        else:
            self._confirm(
                f"Pause workflow {self.workflow_id}?",
                lambda ok: source.pause(self.workflow_id),
                "workflow paused",
            )

    def _live_stage(self) -> StageExecution | None:
        if self.as_of is not None:
            self.notify("press l to go live before acting", severity="warning")
            return None
        stage = self.selected_stage()
        if stage is None:
            self.notify("choose a stage first", severity="warning")
        return stage

    def _confirm(
        self,
        question: str,
        act: Callable[[Confirmed], None],
        done: str,
        *,
        ask_name: bool = False,
    ) -> None:
        def after(result: Confirmed | None) -> None:
            if result is None:
                return
            self.operator = result.user
            try:
                act(result)
            except Exception as exc:
                self.notify(f"refused: {exc}", severity="error", timeout=8)
                return
            self.notify(done)
            self.monitor.reload()
            self.reload()

        self.app.push_screen(ConfirmScreen(question, self.operator, ask_name=ask_name), after)


def stage_text(stage: StageExecution, progress: list[dict[str, Any]]) -> Text:
    """A stage's status, context, outputs, error, retries, tokens and progress, as text."""
    out = Text()
    out.append(f"{stage.ref_id}", style="bold")
    out.append(f"  {stage.name or stage.type}\n")
    out.append(f"status: {stage.status.value}", style=_style(stage.status))
    if stage.status_reason:
        out.append(f" ({stage.status_reason})")
    out.append("\n")
    error = _error(stage)
    if error:
        out.append(f"error: {error}\n", style="red")
    retries = [(t.name, t.retry_count) for t in stage.tasks if t.retry_count]
    if retries:
        out.append("retries: " + ", ".join(f"{n} {c}" for n, c in retries) + "\n")
    usage = stage.outputs.get("llm_usage") or stage.outputs.get("usage")
    if usage:
        out.append(f"tokens: {_compact(usage)}\n")
    _section(out, "context", {k: v for k, v in stage.context.items() if not k.startswith("_")})
    _section(out, "outputs", stage.outputs)
    if progress:
        out.append("progress:\n", style="bold")
        tokens = "".join(str(p["token"]) for p in progress if "token" in p)
        if tokens:
            out.append(f"  {tokens[-400:]}\n")
        for item in [p for p in progress if "token" not in p][-PROGRESS_SHOWN:]:
            out.append(f"  {item.get('message') or _compact(item)}\n")
    return out


def _section(out: Text, title: str, values: dict[str, Any]) -> None:
    out.append(f"{title}:", style="bold")
    if not values:
        out.append(" -\n")
        return
    out.append("\n")
    for key, value in values.items():
        out.append(f"  {key}: {_compact(value)}\n")


def _compact(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, default=str, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(stage: StageExecution) -> str:
    for task in stage.tasks:
        details = task.task_exception_details
        if details:
            return str(details.get("message") or details.get("error") or _compact(details))
    value = stage.context.get("exception") or stage.context.get("error")
    return "" if value is None else _compact(value)


def _style(status: WorkflowStatus) -> str:
    from stabilize_monitor.app import STATUS_STYLE

    return STATUS_STYLE.get(status.value, "")


def _index_at(sequences: list[int], sequence: int) -> int:
    for index, value in enumerate(sequences):
        if value >= sequence:
            return index
    return len(sequences) - 1


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment (containers)
        return ""
