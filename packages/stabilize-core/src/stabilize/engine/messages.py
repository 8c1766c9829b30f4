"""The messages that move a workflow forward and the effects a transition produces.

Re-exported from :mod:`stabilize.records` and :mod:`stabilize.message_kinds`, where they
live beside storage, which consumes them (kept importable from here).
"""

from __future__ import annotations

from stabilize.message_kinds import (
    ACQUIRE_MUTEX,
    CANCEL_WORKFLOW,
    INLINE_KINDS,
    MESSAGE_KINDS,
    RELEASE_MUTEX,
    RUN_TASK,
    SIGNAL_TIMEOUT,
    STAGE_DEADLINE,
    START_WORKFLOW,
    TRANSITION_KINDS,
)
from stabilize.records import USER_DATA_EVENTS, ClaimedMessage, Effects, EventDraft, Message

__all__ = [
    "ACQUIRE_MUTEX",
    "CANCEL_WORKFLOW",
    "INLINE_KINDS",
    "MESSAGE_KINDS",
    "RELEASE_MUTEX",
    "RUN_TASK",
    "SIGNAL_TIMEOUT",
    "STAGE_DEADLINE",
    "START_WORKFLOW",
    "TRANSITION_KINDS",
    "USER_DATA_EVENTS",
    "ClaimedMessage",
    "Effects",
    "EventDraft",
    "Message",
]
