"""Live, resumable streams of a workflow's events.

A :class:`WorkflowStream` yields the events of one workflow as :class:`StreamItem` objects:
its recorded history, new events as they commit (in this process or any other), and
progress updates of tasks in this process as they are emitted. See
:mod:`stabilize.streaming._stream` for exactly what a reader sees.
"""

from __future__ import annotations

# The original package exported emit_progress from here too; it lives in core, where
# tasks that need no stream package can call it.
from stabilize.events import emit_progress
from stabilize.streaming._item import TERMINAL_EVENTS, StreamItem
from stabilize.streaming._stream import StreamError, WorkflowStream

__all__ = ["TERMINAL_EVENTS", "StreamError", "StreamItem", "WorkflowStream", "emit_progress"]
