"""The kinds of messages the engine queues (re-exported for compatibility)."""

from __future__ import annotations

from stabilize.message_kinds import MESSAGE_KINDS, RUN_TASK, START_WORKFLOW
from stabilize.records import ClaimedMessage, Message

__all__ = ["MESSAGE_KINDS", "RUN_TASK", "START_WORKFLOW", "ClaimedMessage", "Message"]
