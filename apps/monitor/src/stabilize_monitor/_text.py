"""How times, durations and progress read on the screen (UTC, so frames are deterministic)."""

from __future__ import annotations

from datetime import UTC, datetime

from stabilize_monitor._model import WorkflowRow


def format_time(epoch_ms: int | None) -> str:
    """``MM-DD HH:MM:SS`` in UTC, or ``-``."""
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%m-%d %H:%M:%S")


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m`` or ``3d04h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_duration(row: WorkflowRow, now: float) -> str:
    """How long the workflow has run (until it ended, or until ``now``)."""
    if row.start_time is None:
        return "-"
    end = row.end_time if row.end_time is not None else int(now * 1000)
    return format_seconds((end - row.start_time) / 1000)


def format_progress(row: WorkflowRow) -> str:
    """``done/total`` stages."""
    return f"{row.stages_done}/{row.stages_total}"
