"""stabilize-monitor: a terminal monitor of stabilize workflows (``stabilize monitor``).

The app (:class:`stabilize_monitor.app.MonitorApp`, on Textual) reads everything through a
:class:`Source`; :class:`DatabaseSource` is the one on a real database. Importing this
package does not import Textual.
"""

from __future__ import annotations

from stabilize_monitor._model import (
    STATUS_FILTERS,
    Filters,
    QueueStats,
    Source,
    WorkflowRow,
)
from stabilize_monitor._source import DatabaseSource
from stabilize_monitor._summary import summary_text

__version__ = "0.1.0"

__all__ = [
    "STATUS_FILTERS",
    "DatabaseSource",
    "Filters",
    "QueueStats",
    "Source",
    "WorkflowRow",
    "__version__",
    "summary_text",
]
