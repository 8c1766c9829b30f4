"""stabilize: a durable workflow engine for Python, built for agentic systems.

The public names live in private modules and are re-exported here. Names contributed by
extensions (``ApprovalTask``, ``WorkflowStream``, ...) are loaded lazily from the
``stabilize.exports`` entry-point group the first time they are used.
"""

from __future__ import annotations

import pkgutil

# One import package spans several distributions (stabilize.llm, stabilize.hitl, ...).
# Editable installs put each member's src/ on sys.path separately, so the package path
# must be extended to find them; in an installed wheel this changes nothing.
__path__ = pkgutil.extend_path(__path__, __name__)

from typing import TYPE_CHECKING, Any

from stabilize._plugins import export_names, load_export
from stabilize._version import __version__
from stabilize.cancellation import (
    CancellationToken,
    TaskCancelledError,
    is_cancellation_requested,
    raise_if_cancellation_requested,
)
from stabilize.errors import (
    CircularDependencyError,
    InvalidStageGraphError,
    InvalidTaskResultError,
    PermanentError,
    SignalError,
    StabilizeError,
    TaskError,
    TaskTimeoutError,
    TransientError,
    WorkflowValidationError,
    is_permanent,
    is_transient,
)
from stabilize.events.progress import emit_progress
from stabilize.lifecycle import (
    LifecycleManager,
    get_lifecycle_manager,
    install_shutdown_handlers,
    set_lifecycle_manager,
)
from stabilize.logs import (
    bind_context,
    clear_context,
    configure_logging,
    get_logger,
    stage_logger,
    task_logger,
    unbind_context,
    workflow_logger,
)
from stabilize.loops import LoopTask, repeat_until, while_loop
from stabilize.models import (
    JoinType,
    MultiInstanceConfig,
    SplitType,
    StageExecution,
    StragglerPolicy,
    TaskExecution,
    Workflow,
    WorkflowStatus,
)
from stabilize.orchestrator import Orchestrator
from stabilize.persistence import (
    PostgresWorkflowStore,
    SqliteWorkflowStore,
    WorkflowNotFoundError,
    WorkflowStore,
)
from stabilize.queue import PostgresQueue, Queue, SqliteQueue
from stabilize.queue.processor import QueueProcessor, QueueProcessorConfig
from stabilize.recovery import RecoveryError, RecoveryResult, WorkflowRecovery, recover_on_startup
from stabilize.reducers import apply_output_reducers, get_reducer, register_reducer
from stabilize.tasks import (
    CallableTask,
    NoOpTask,
    RetryableTask,
    SkippableTask,
    Task,
    TaskRegistry,
    TaskResult,
    WaitTask,
)
from stabilize.tasks.docker import DockerTask
from stabilize.tasks.http import HTTPTask
from stabilize.tasks.python_task import PythonTask
from stabilize.tasks.shell import ShellTask
from stabilize.tasks.ssh import SSHTask
from stabilize.tasks.sub_workflow import SubWorkflowTask, sub_workflow_config
from stabilize.tracing import (
    add_event,
    configure_tracing,
    get_tracer,
    set_attribute,
    trace_operation,
)
from stabilize.validation import (
    SchemaValidator,
    ValidationError,
    is_valid,
    validate_context,
    validate_outputs,
)
from stabilize.verification import (
    CallableVerifier,
    OutputVerifier,
    Verifier,
    VerifyResult,
    VerifyStatus,
    get_verifier,
    register_verifier,
    verifier,
)
from stabilize.workflow_engine import WorkflowEngine

if TYPE_CHECKING:  # exact types for mypy; at run time these resolve through __getattr__
    from stabilize.hitl import ApprovalTask as ApprovalTask
    from stabilize.hitl import approve as approve
    from stabilize.hitl import get_signal as get_signal
    from stabilize.hitl import reject as reject
    from stabilize.hitl import send_signal as send_signal
    from stabilize.llm import AgentLoopTask as AgentLoopTask
    from stabilize.llm import LLMClient as LLMClient
    from stabilize.llm import LLMTask as LLMTask
    from stabilize.llm import ToolError as ToolError
    from stabilize.llm import ToolRegistry as ToolRegistry
    from stabilize.llm import tool as tool

__all__ = [
    "CallableTask",
    "CallableVerifier",
    "CancellationToken",
    "CircularDependencyError",
    "DockerTask",
    "HTTPTask",
    "InvalidStageGraphError",
    "InvalidTaskResultError",
    "JoinType",
    "LifecycleManager",
    "LoopTask",
    "MultiInstanceConfig",
    "NoOpTask",
    "Orchestrator",
    "OutputVerifier",
    "PermanentError",
    "PostgresQueue",
    "PostgresWorkflowStore",
    "PythonTask",
    "Queue",
    "QueueProcessor",
    "QueueProcessorConfig",
    "RecoveryError",
    "RecoveryResult",
    "RetryableTask",
    "SSHTask",
    "SchemaValidator",
    "ShellTask",
    "SignalError",
    "SkippableTask",
    "SplitType",
    "SqliteQueue",
    "SqliteWorkflowStore",
    "StabilizeError",
    "StageExecution",
    "StragglerPolicy",
    "SubWorkflowTask",
    "Task",
    "TaskCancelledError",
    "TaskError",
    "TaskExecution",
    "TaskRegistry",
    "TaskResult",
    "TaskTimeoutError",
    "TransientError",
    "ValidationError",
    "Verifier",
    "VerifyResult",
    "VerifyStatus",
    "WaitTask",
    "Workflow",
    "WorkflowEngine",
    "WorkflowNotFoundError",
    "WorkflowRecovery",
    "WorkflowStatus",
    "WorkflowStore",
    "WorkflowValidationError",
    "__version__",
    "add_event",
    "apply_output_reducers",
    "bind_context",
    "clear_context",
    "configure_logging",
    "configure_tracing",
    "emit_progress",
    "get_lifecycle_manager",
    "get_logger",
    "get_reducer",
    "get_tracer",
    "get_verifier",
    "install_shutdown_handlers",
    "is_cancellation_requested",
    "is_permanent",
    "is_transient",
    "is_valid",
    "raise_if_cancellation_requested",
    "recover_on_startup",
    "register_reducer",
    "register_verifier",
    "repeat_until",
    "set_attribute",
    "set_lifecycle_manager",
    "stage_logger",
    "sub_workflow_config",
    "task_logger",
    "trace_operation",
    "unbind_context",
    "validate_context",
    "validate_outputs",
    "verifier",
    "while_loop",
    "workflow_logger",
]


def __getattr__(name: str) -> Any:
    """Load a name an extension exports (PEP 562); runs only for names not defined here."""
    value = load_export(name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *export_names()})
