"""The queue processor and its configuration."""

from __future__ import annotations

from stabilize.queue.processor._processor import QueueProcessor
from stabilize.queue.processor.config import QueueProcessorConfig

__all__ = ["QueueProcessor", "QueueProcessorConfig"]
