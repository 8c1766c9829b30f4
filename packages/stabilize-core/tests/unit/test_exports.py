"""The public surface of ``stabilize``: a change to it must be deliberate."""

from __future__ import annotations

import importlib

import pytest

import stabilize

EXPECTED = [
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


# What core offers extensions besides the facade (issue 18): reading a task's context,
# the shared shape of a plugin's command, a signal with a guard in its transaction.
EXTENSION_API = {
    "stabilize.tasks": [
        "CallableTask",
        "ContextReader",
        "NoOpTask",
        "RetryableTask",
        "SkippableTask",
        "Task",
        "TaskConfigError",
        "TaskRegistry",
        "TaskResult",
        "TaskResultBuilder",
        "WaitTask",
        "mask_secrets",
    ],
    "stabilize.cli": [
        "CommandError",
        "add_database_options",
        "command_parser",
        "main",
        "run_command",
    ],
    "stabilize.orchestrator": ["Orchestrator", "send_stage_signal"],
}


def test_all_is_pinned_and_sorted() -> None:
    assert stabilize.__all__ == EXPECTED


@pytest.mark.parametrize("module", EXTENSION_API)
def test_the_extension_api_is_pinned_and_resolves(module: str) -> None:
    package = importlib.import_module(module)

    assert package.__all__ == EXTENSION_API[module]
    for name in package.__all__:
        assert getattr(package, name) is not None


def test_every_exported_name_resolves() -> None:
    for name in stabilize.__all__:
        assert getattr(stabilize, name) is not None


def test_spec_paths_import() -> None:
    # Paths the original package's README uses besides the facade.
    from stabilize.events import SqliteEventStore, configure_event_sourcing
    from stabilize.queue.processor.config import QueueProcessorConfig

    assert QueueProcessorConfig is stabilize.QueueProcessorConfig
    assert callable(configure_event_sourcing)
    assert SqliteEventStore is not None
