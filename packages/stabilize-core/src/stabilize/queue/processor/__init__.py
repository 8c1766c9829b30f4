"""The queue processor and its configuration."""

from __future__ import annotations

from stabilize.queue.processor._processor import QueueProcessor
from stabilize.queue.processor._result import ProcessResult
from stabilize.queue.processor.config import QueueProcessorConfig

__all__ = ["ProcessResult", "QueueProcessor", "QueueProcessorConfig"]
