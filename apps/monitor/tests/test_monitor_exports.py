"""The public names of stabilize_monitor, pinned."""

from __future__ import annotations

import stabilize_monitor


def test_exports() -> None:
    assert stabilize_monitor.__all__ == [
        "STATUS_FILTERS",
        "DatabaseSource",
        "Filters",
        "QueueStats",
        "Source",
        "WorkflowRow",
        "__version__",
        "summary_text",
    ]
    for name in stabilize_monitor.__all__:
        getattr(stabilize_monitor, name)
