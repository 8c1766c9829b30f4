"""The data model: workflows, stages, tasks and their statuses."""

from __future__ import annotations

from stabilize.models.loop import LoopConfig
from stabilize.models.stage import (
    JoinType,
    MultiInstanceConfig,
    SplitType,
    StageExecution,
    StragglerPolicy,
)
from stabilize.models.status import WorkflowStatus
from stabilize.models.task import TaskExecution
from stabilize.models.workflow import Workflow, WorkflowType

__all__ = [
    "JoinType",
    "LoopConfig",
    "MultiInstanceConfig",
    "SplitType",
    "StageExecution",
    "StragglerPolicy",
    "TaskExecution",
    "Workflow",
    "WorkflowStatus",
    "WorkflowType",
]
