"""The public surface of stabilize.streaming."""

from __future__ import annotations

import subprocess
import sys

import pytest

import stabilize
import stabilize.streaming
from stabilize.events import SqliteEventStore, disable_event_sourcing
from stabilize.streaming import StreamError, StreamItem, WorkflowStream


def test_streaming_exports() -> None:
    assert sorted(stabilize.streaming.__all__) == [
        "StreamError",
        "StreamItem",
        "TERMINAL_EVENTS",
        "WorkflowStream",
    ]


def test_exported_through_stabilize() -> None:
    assert stabilize.WorkflowStream is WorkflowStream
    assert stabilize.StreamItem is StreamItem


def test_stream_needs_an_event_log() -> None:
    disable_event_sourcing()
    with pytest.raises(StreamError, match="configure_event_sourcing"):
        WorkflowStream("wf")


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
