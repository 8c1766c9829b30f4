"""The kinds of messages the engine queues (re-exported for compatibility)."""

from __future__ import annotations

from stabilize.engine.messages import (
    MESSAGE_KINDS,
    RUN_TASK,
    START_WORKFLOW,
    ClaimedMessage,
    Message,
)

__all__ = ["MESSAGE_KINDS", "RUN_TASK", "START_WORKFLOW", "ClaimedMessage", "Message"]
