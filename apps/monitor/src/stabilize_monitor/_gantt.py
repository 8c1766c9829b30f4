"""A text Gantt timeline of a workflow's stage runs, drawn with block characters.

Each stage gets a row; each run of it (a loop pass, a restart) a bar from its start to
its end on a shared time axis. A run still going ends at ``now``, so its bar grows as the
screen is redrawn. Runs come from the event log (``stage.started`` to the event that ended
the stage); without recorded events, from the stages' own start and end times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from stabilize.models.event import Event
from stabilize.models.workflow import Workflow

ENDED = {
    "stage.completed": "SUCCEEDED",
    "stage.failed": "TERMINAL",
    "stage.skipped": "SKIPPED",
    "stage.canceled": "CANCELED",
}
"""Events that end a stage's run, and the status a run ends with when the event has none."""

LABEL_WIDTH = 16
"""Columns of the stage names (longer names are cut)."""


@dataclass
class StageRun:
    """One run of a stage, from its start to its end (``None``: still running).

    Attributes:
        ref_id: The stage's ``ref_id``.
        start: Epoch milliseconds.
        end: Epoch milliseconds, or ``None`` while it runs.
        status: How it ended (``RUNNING`` while it runs).
        retries: Task retries during this run.
    """

    ref_id: str
    start: int
    end: int | None
    status: str
    retries: int = 0


def stage_runs(workflow: Workflow, events: Iterable[Event]) -> list[StageRun]:
    """Every run of every stage, oldest first.

    Args:
        workflow: The workflow in the state shown (names stages by id).
        events: Its event log, up to the event shown.
    """
    refs = {s.id: s.ref_id for s in workflow.stages}
    runs: list[StageRun] = []
    open_runs: dict[str, StageRun] = {}
    for event in events:
        kind = event.event_type
        if kind == "stage.started":
            _close(open_runs, event.entity_id, event.timestamp, "REDIRECT")
            ref = refs.get(event.entity_id) or str(event.data.get("ref_id", event.entity_id))
            run = StageRun(ref, event.timestamp, None, "RUNNING")
            open_runs[event.entity_id] = run
            runs.append(run)
        elif kind in ENDED:
            ended = open_runs.pop(event.entity_id, None)
            if ended is not None:
                ended.end = event.timestamp
                ended.status = str(event.data.get("status") or ENDED[kind])
        elif kind == "jump.executed":
            # A loop back resets the jumping stage without ending it: its run ends here.
            _close(open_runs, event.entity_id, event.timestamp, "REDIRECT")
        elif kind == "stage.suspended" and event.entity_id in open_runs:
            open_runs[event.entity_id].status = "SUSPENDED"
        elif kind == "task.started" and event.data.get("stage_id") in open_runs:
            open_runs[str(event.data["stage_id"])].status = "RUNNING"
        elif kind == "task.retried" and event.data.get("stage_id") in open_runs:
            open_runs[str(event.data["stage_id"])].retries += 1
    if runs:
        return runs
    return [
        StageRun(
            s.ref_id,
            s.start_time,
            s.end_time,
            s.status.value,
            sum(t.retry_count for t in s.tasks),
        )
        for s in workflow.stages
        if s.start_time is not None
    ]


def gantt_lines(
    workflow: Workflow, runs: list[StageRun], now: int, width: int, styles: dict[str, str]
) -> list[Text]:
    """The timeline as lines of text ``width`` columns wide, one per stage that ran.

    Args:
        workflow: Gives the order of the rows (the stages' order).
        runs: From :func:`stage_runs`.
        now: Epoch milliseconds; where running bars end.
        width: Columns available.
        styles: A rich style per status value.
    """
    if not runs:
        return [Text("no stage has started yet", style="dim")]
    start = min(r.start for r in runs)
    end = max(max(r.end if r.end is not None else now for r in runs), start + 1)
    order = [s.ref_id for s in workflow.stages]
    rows = sorted({r.ref_id for r in runs}, key=lambda ref: (_position(order, ref), ref))
    by_row = {ref: [r for r in runs if r.ref_id == ref] for ref in rows}
    notes = {ref: _note(mine, now) for ref, mine in by_row.items()}
    bar_width = max(10, width - LABEL_WIDTH - 1 - max(len(n) for n in notes.values()))
    scale = bar_width / (end - start)
    lines = [_axis(start, end, bar_width)]
    for ref, mine in by_row.items():
        line = Text(_cut(ref, LABEL_WIDTH).ljust(LABEL_WIDTH) + " ")
        cells: list[tuple[str, str]] = [(" ", "")] * bar_width
        for run in mine:
            first = min(bar_width - 1, int((run.start - start) * scale))
            stop = run.end if run.end is not None else now
            last = max(first + 1, min(bar_width, round((stop - start) * scale)))
            glyph = "▓" if run.end is None else "█"
            for i in range(first, last):
                cells[i] = (glyph, styles.get(run.status, ""))
        for glyph, style in cells:
            line.append(glyph, style=style)
        line.append(notes[ref], style=styles.get(mine[-1].status, ""))
        lines.append(line)
    return lines


def _note(mine: list[StageRun], now: int) -> str:
    """What follows a stage's bars: the latest run's duration and status, runs, retries."""
    latest = mine[-1]
    took = (latest.end if latest.end is not None else now) - latest.start
    note = f" {_duration(took)} {latest.status}"
    if len(mine) > 1:
        note += f" {len(mine)} runs"
    retries = sum(r.retries for r in mine)
    if retries:
        note += f" ↻{retries}"
    return note


class GanttTimeline(Widget):
    """The workflow screen's timeline of stage runs (redrawn with the screen).

    Attributes:
        runs: The runs to draw.
        now: Epoch milliseconds where running bars end.
    """

    DEFAULT_CSS = """
    GanttTimeline { height: auto; max-height: 12; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.workflow: Workflow | None = None
        self.runs: list[StageRun] = []
        self.now = 0

    def show(self, workflow: Workflow, runs: list[StageRun], now: int) -> None:
        """Draw these runs (a running one ends at ``now``)."""
        self.workflow, self.runs, self.now = workflow, runs, now
        self.refresh(layout=True)

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        """One line per stage that ran, plus the axis."""
        return 1 + len({r.ref_id for r in self.runs}) if self.runs else 1

    def render(self) -> Text:
        """The timeline at the widget's current width."""
        if self.workflow is None:
            return Text("")
        from stabilize_monitor.app import STATUS_STYLE

        lines = gantt_lines(
            self.workflow, self.runs, self.now, self.content_size.width, STATUS_STYLE
        )
        text = Text("\n").join(lines)
        text.no_wrap = True
        text.overflow = "crop"
        return text


def _close(open_runs: dict[str, StageRun], stage_id: str, at: int, status: str) -> None:
    run = open_runs.pop(stage_id, None)
    if run is not None:
        run.end = at
        run.status = status


def _axis(start: int, end: int, bar_width: int) -> Text:
    label = "timeline".ljust(LABEL_WIDTH) + " "
    right = f"+{_duration(end - start)}"
    return Text(label + "0s".ljust(bar_width - len(right)) + right, style="dim")


def _position(order: list[str], ref: str) -> int:
    base = ref.split("[", 1)[0]  # a fan-out instance sorts after its fan-out stage
    return order.index(base) if base in order else len(order)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _duration(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
