"""The one-shot text summary ``stabilize monitor`` prints when it has no terminal."""

from __future__ import annotations

from stabilize.models.status import WorkflowStatus
from stabilize_monitor._model import Filters, Source
from stabilize_monitor._text import format_duration, format_progress, format_time

SUMMARY_ROWS = 20
"""Workflows listed by the summary (the newest that pass the filters)."""


def summary_text(source: Source, filters: Filters, now: float, rows: int = SUMMARY_ROWS) -> str:
    """Workflows by status, queue depth and workers, and the newest workflows, as text.

    Args:
        source: Where to read.
        filters: The application and status filters (as on the screen).
        now: The current time, epoch seconds.
        rows: How many workflows to list.

    Returns:
        Lines ending with a newline.
    """
    counts = source.counts(filters.application)
    stats = source.queue_stats(now)
    lines = [f"stabilize monitor: {source.location}", f"filters: {filters.describe()}", ""]
    total = sum(counts.values())
    lines.append(f"workflows: {total}")
    for status in WorkflowStatus:
        if counts.get(status.value):
            lines.append(f"  {status.value:<16}{counts[status.value]:>8}")
    lines.append("")
    lines.append(
        f"queue: {stats.depth} messages ({stats.ready} ready, {stats.delayed} delayed, "
        f"{stats.leased} leased), {stats.dead_letters} dead letters"
    )
    if stats.leases_by_owner:
        lines.append("workers:")
        for owner, leases in sorted(stats.leases_by_owner.items()):
            lines.append(f"  {owner}: {leases} lease{'' if leases == 1 else 's'}")
    else:
        lines.append("workers: none holds a lease")
    found = source.workflows(filters, rows, now)
    lines.append("")
    lines.append(f"newest {len(found)} workflow{'' if len(found) == 1 else 's'}:")
    for row in found:
        current = ",".join(row.current_stages) or "-"
        lines.append(
            f"  {row.id}  {row.application}  {row.name}  {row.status}  "
            f"{format_progress(row)}  started {format_time(row.start_time)}  "
            f"{format_duration(row, now)}  {current}"
        )
    return "\n".join(lines) + "\n"
