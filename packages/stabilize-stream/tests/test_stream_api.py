"""The public surface of stabilize.streaming."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import stabilize
import stabilize.streaming
from stabilize import SqliteWorkflowStore, StageExecution, Workflow
from stabilize.events import SqliteEventStore, configure_event_sourcing, disable_event_sourcing
from stabilize.streaming import StreamError, StreamItem, WorkflowStream


def test_streaming_exports() -> None:
    assert sorted(stabilize.streaming.__all__) == [
        "StreamError",
        "StreamItem",
        "TERMINAL_EVENTS",
        "WorkflowStream",
        "emit_progress",
    ]


def test_exported_through_stabilize() -> None:
    assert stabilize.WorkflowStream is WorkflowStream
    assert stabilize.StreamItem is StreamItem


def test_emit_progress_importable_from_streaming_as_the_readme_shows() -> None:
    from stabilize.streaming import emit_progress

    assert emit_progress is stabilize.emit_progress


def test_stream_without_a_store_needs_a_database_holding_the_workflow(tmp_path: Path) -> None:
    # Two engines' files are open in this process; neither holds the workflow.
    first = SqliteWorkflowStore(f"sqlite:///{tmp_path}/a.db")
    second = SqliteWorkflowStore(f"sqlite:///{tmp_path}/b.db")
    with pytest.raises(StreamError, match="no event log holds workflow 'nope'"):
        WorkflowStream("nope")
    first.backend.close()
    second.backend.close()


def test_stream_without_a_store_finds_the_database_of_the_workflow(tmp_path: Path) -> None:
    first = SqliteWorkflowStore(f"sqlite:///{tmp_path}/a.db")
    second = SqliteWorkflowStore(f"sqlite:///{tmp_path}/b.db")
    wf = Workflow.create(
        application="app", name="w", stages=[StageExecution(ref_id="s", type="t", name="s")]
    )
    second.store(wf)
    with WorkflowStream(wf.id) as stream:
        assert [i.event_type for i in stream.replay()] == ["workflow.created"]
    first.backend.close()
    second.backend.close()


def test_disabled_recording_writes_no_events(tmp_path: Path) -> None:
    store = SqliteWorkflowStore(f"sqlite:///{tmp_path}/a.db")
    disable_event_sourcing()
    try:
        wf = Workflow.create(
            application="app", name="w", stages=[StageExecution(ref_id="s", type="t", name="s")]
        )
        store.store(wf)
    finally:
        configure_event_sourcing()
    with WorkflowStream(wf.id) as stream:
        assert stream.replay() == []
    store.backend.close()


def test_closed_stream_refuses_consumers(tmp_path: object) -> None:
    events = SqliteEventStore(f"sqlite:///{tmp_path}/e.db")
    stream = WorkflowStream("wf", events)
    stream.close()
    stream.close()
    assert stream.closed
    with pytest.raises(StreamError, match="closed"):
        stream.follow()
    events.close()


def test_importing_streaming_loads_no_websockets() -> None:
    code = "import sys, stabilize.streaming; print('websockets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
