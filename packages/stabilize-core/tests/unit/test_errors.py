"""The exceptions of stabilize/errors.py and the transient/permanent classification."""

from __future__ import annotations

import pytest

from stabilize.errors import (
    CircularDependencyError,
    ContextSerializationError,
    InvalidStageGraphError,
    PermanentError,
    StabilizeError,
    TaskError,
    TaskNotFoundError,
    TaskTimeoutError,
    TransientError,
    UnknownTaskTypeError,
    WorkflowValidationError,
    is_permanent,
    is_transient,
)


def test_transient_error_fields() -> None:
    cause = OSError("reset")
    update = {"cursor": 3}
    err = TransientError(
        "flaky",
        code=503,
        cause=cause,
        error_code="UNAVAILABLE",
        retry_after=2.5,
        context_update=update,
    )
    assert str(err) == "flaky"
    assert err.message == "flaky"
    assert err.code == 503
    assert err.cause is cause
    assert err.error_code == "UNAVAILABLE"
    assert err.retry_after == 2.5
    assert err.context_update == {"cursor": 3}
    update["cursor"] = 4
    assert err.context_update == {"cursor": 3}  # copied
    assert isinstance(err, TaskError)
    assert isinstance(err, StabilizeError)


def test_transient_error_defaults() -> None:
    err = TransientError("x")
    assert err.retry_after is None
    assert err.context_update == {}
    assert err.code is None
    assert err.cause is None
    assert err.error_code is None


def test_transient_error_accepts_zero_retry_after() -> None:
    assert TransientError("x", retry_after=0).retry_after == 0


def test_transient_error_refuses_negative_retry_after() -> None:
    with pytest.raises(ValueError, match=r"retry_after must be >= 0, got -1"):
        TransientError("x", retry_after=-1)


@pytest.mark.parametrize(
    "error",
    [
        TransientError("x"),
        TimeoutError("t"),
        ConnectionError("c"),
        ConnectionResetError("r"),
        ConnectionRefusedError("r"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_errors(error: BaseException) -> None:
    assert is_transient(error)
    assert not is_permanent(error)


class PermanentTimeout(PermanentError, TimeoutError):
    pass


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("p"),
        PermanentTimeout("p"),
        ValueError("v"),
        RuntimeError("r"),
        TaskTimeoutError("t"),
        TaskError("t"),
        KeyboardInterrupt(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_errors(error: BaseException) -> None:
    assert not is_transient(error)
    assert is_permanent(error)


def test_validation_errors_are_value_errors_with_a_ref_id() -> None:
    err = WorkflowValidationError("bad", ref_id="a")
    assert isinstance(err, ValueError)
    assert err.ref_id == "a"
    assert WorkflowValidationError("bad").ref_id is None
    assert issubclass(UnknownTaskTypeError, WorkflowValidationError)
    assert issubclass(ContextSerializationError, WorkflowValidationError)


def test_invalid_stage_graph_error_kind() -> None:
    err = InvalidStageGraphError("dup", kind="duplicate_ref", ref_id="a")
    assert (err.kind, err.ref_id, str(err)) == ("duplicate_ref", "a", "dup")


def test_circular_dependency_error() -> None:
    err = CircularDependencyError(["a", "b", "a"])
    assert err.cycle == ["a", "b", "a"]
    assert err.kind == "cycle"
    assert err.ref_id == "a"
    assert str(err) == "circular dependency between stages: a -> b -> a"


def test_task_not_found_is_a_key_error_with_a_readable_message() -> None:
    err = TaskNotFoundError("no task registered as 'x'")
    assert isinstance(err, KeyError)
    assert str(err) == "no task registered as 'x'"  # KeyError would add quotes
    assert str(TaskNotFoundError()) == "task not found"
