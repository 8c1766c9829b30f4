"""The kinds of queue messages, and which of them the processor settles in a transaction.

One definition for the processor, which applies the transitions, and the storage code,
which locks a workflow's row when it acknowledges a message whose transition follows.
"""

from __future__ import annotations

START_WORKFLOW = "StartWorkflow"
RUN_TASK = "RunTask"
STAGE_DEADLINE = "StageDeadline"
CANCEL_WORKFLOW = "CancelWorkflow"
ACQUIRE_MUTEX = "AcquireMutex"
RELEASE_MUTEX = "ReleaseMutex"
SIGNAL_TIMEOUT = "SignalTimeout"

MESSAGE_KINDS = frozenset(
    {
        START_WORKFLOW,
        RUN_TASK,
        STAGE_DEADLINE,
        CANCEL_WORKFLOW,
        ACQUIRE_MUTEX,
        RELEASE_MUTEX,
        SIGNAL_TIMEOUT,
    }
)

INLINE_KINDS = frozenset({START_WORKFLOW, STAGE_DEADLINE, CANCEL_WORKFLOW, SIGNAL_TIMEOUT})
"""Kinds whose transition the processor applies in the transaction that acknowledges them
(no user code runs for them)."""

TRANSITION_KINDS = INLINE_KINDS | {RUN_TASK}
"""Kinds whose acknowledgement the processor follows with a transition of their workflow in
the same transaction: the inline kinds, and ``RunTask``, acknowledged when its task's result
is committed. A backend may lock the workflow's row as it acknowledges one of them (the
mutex messages take a lock of their own and are not among them)."""
