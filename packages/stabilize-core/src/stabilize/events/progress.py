"""Progress updates from inside a task: live at once, recorded with the worker's next commit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from stabilize._json import describe_unencodable
from stabilize.errors import ContextSerializationError
from stabilize.events.bus import get_event_bus
from stabilize.models.event import Event, EventType

if TYPE_CHECKING:
    from stabilize.events.recording import EventRecorder
    from stabilize.models.stage import StageExecution


def emit_progress(
    stage: StageExecution, message: str = "", *, recorder: EventRecorder | None = None, **data: Any
) -> None:
    """Report progress from inside a task.

    Listeners in this process get a ``custom.progress`` event at once. When event recording
    is on (the default) the update is also recorded, without a commit of its own: the
    worker appends the updates of all its running tasks to the log in one commit every
    ``QueueProcessorConfig.progress_flush_interval_seconds`` (0.5 s by default), and the
    last ones with the task's result. Readers in other processes (streams, the gateway)
    see them then. After a crash, the updates recorded before it stay in the log; those
    emitted since the last flush are gone (live listeners saw them), and the task runs
    again, emitting its own.

    Args:
        stage: The stage the task received.
        message: What is happening, in words.
        recorder: The recorder to record with (default: the one the worker set for the
            task, if any).
        **data: Further JSON values, added to the event's data next to ``message``.

    Raises:
        ContextSerializationError: the message or a value of ``data`` cannot be stored
            as JSON (the error names the key); nothing is emitted.
    """
    payload = {"message": message, "stage_id": stage.id, "ref_id": stage.ref_id, **data}
    problem = describe_unencodable(payload, f"progress update of stage {stage.ref_id!r}")
    if problem is not None:
        raise ContextSerializationError(problem, ref_id=stage.ref_id)
    buffer = stage._progress
    if buffer is not None:
        buffer.append(payload)
    bus = get_event_bus()
    workflow_id = stage.workflow_id
    if bus.has_listeners and workflow_id is not None:
        bus.publish(
            Event(
                workflow_id,
                0,
                EventType.CUSTOM_PROGRESS.value,
                "stage",
                stage.id,
                int(time.time() * 1000),
                payload,
            )
        )
