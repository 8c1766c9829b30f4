"""Verifiers: checks of a stage's outputs that say OK, FAILED, RETRY or SKIPPED.

A verifier is a plain object a task calls (or a registry hands out by name)::

    @verifier("has_url")
    def has_url(stage: StageExecution) -> VerifyResult:
        return VerifyResult.ok() if stage.outputs.get("url") else VerifyResult.failed("no url")

    class Deploy(Task):
        def execute(self, stage):
            outputs = deploy(stage)
            stage.outputs.update(outputs)
            return verify_result(get_verifier("has_url").verify(stage), outputs)

The engine does not run verifiers by itself: a task decides what a result means for it.
:meth:`VerifyResult.to_task_result` maps the usual way (OK: success; RETRY: running, so a
:class:`~stabilize.RetryableTask` polls again; FAILED: terminal; SKIPPED: skipped).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, overload

from stabilize.models.stage import StageExecution
from stabilize.tasks.result import TaskResult


class VerifyStatus(Enum):
    """What a verification found."""

    OK = "OK"
    RETRY = "RETRY"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclass
class VerifyResult:
    """The result of one verification.

    Attributes:
        status: What it found.
        message: Why, in words.
        details: Anything else worth keeping (JSON values).
        timestamp: When it ran.
    """

    status: VerifyStatus
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def ok(cls, message: str = "Verification passed") -> VerifyResult:
        """The outputs are as they should be.

        Args:
            message: Why, in words.

        Returns:
            An OK result.
        """
        return cls(VerifyStatus.OK, message)

    @classmethod
    def retry(
        cls,
        message: str = "Verification pending, will retry",
        details: dict[str, Any] | None = None,
    ) -> VerifyResult:
        """Not yet: check again later.

        Args:
            message: Why, in words.
            details: Anything else worth keeping (copied).

        Returns:
            A RETRY result.
        """
        return cls(VerifyStatus.RETRY, message, dict(details or {}))

    @classmethod
    def failed(cls, message: str, details: dict[str, Any] | None = None) -> VerifyResult:
        """The outputs are wrong.

        Args:
            message: What is wrong.
            details: Anything else worth keeping (copied).

        Returns:
            A FAILED result.
        """
        return cls(VerifyStatus.FAILED, message, dict(details or {}))

    @classmethod
    def skipped(cls, message: str = "Verification skipped") -> VerifyResult:
        """Nothing was checked.

        Args:
            message: Why, in words.

        Returns:
            A SKIPPED result.
        """
        return cls(VerifyStatus.SKIPPED, message)

    @property
    def is_ok(self) -> bool:
        """The status is OK."""
        return self.status is VerifyStatus.OK

    @property
    def is_retry(self) -> bool:
        """The status is RETRY."""
        return self.status is VerifyStatus.RETRY

    @property
    def is_failed(self) -> bool:
        """The status is FAILED."""
        return self.status is VerifyStatus.FAILED

    @property
    def is_terminal(self) -> bool:
        """OK, FAILED or SKIPPED: checking again would not change it."""
        return self.status is not VerifyStatus.RETRY

    def to_task_result(self, outputs: dict[str, Any] | None = None) -> TaskResult:
        """The task result this verification usually means (see the module docstring).

        Args:
            outputs: The outputs of the success result that OK maps to.

        Returns:
            ``TaskResult.success(outputs)`` for OK, ``running()`` for RETRY (the task is
            polled again), ``skipped()`` for SKIPPED, and for FAILED ``terminal(...)``
            whose error names the message.
        """
        if self.status is VerifyStatus.OK:
            return TaskResult.success(outputs=outputs)
        if self.status is VerifyStatus.RETRY:
            return TaskResult.running()
        if self.status is VerifyStatus.SKIPPED:
            return TaskResult.skipped()
        return TaskResult.terminal(f"verification failed: {self.message}")


class Verifier(ABC):
    """Checks a stage's outputs; subclass and implement :meth:`verify`."""

    @abstractmethod
    def verify(self, stage: StageExecution) -> VerifyResult:
        """Check ``stage`` (its ``outputs``, usually).

        Args:
            stage: The stage whose work is checked.

        Returns:
            What the check found.
        """

    @property
    def max_retries(self) -> int:
        """How many RETRY results a caller should accept before giving up."""
        return 3

    @property
    def retry_delay_seconds(self) -> float:
        """How long a caller should wait between checks."""
        return 1.0


class OutputVerifier(Verifier):
    """Checks that outputs hold keys, of given types.

    Args:
        required_keys: Keys the outputs must have.
        type_checks: Key -> the type (or tuple of types) its value must be, if present.
    """

    def __init__(
        self,
        required_keys: list[str] | None = None,
        type_checks: dict[str, type | tuple[type, ...]] | None = None,
    ) -> None:
        self.required_keys = list(required_keys or [])
        self.type_checks = dict(type_checks or {})

    def verify(self, stage: StageExecution) -> VerifyResult:
        """FAILED naming the missing keys, or the keys of the wrong type; else OK.

        Args:
            stage: The stage whose ``outputs`` are checked.

        Returns:
            FAILED with ``missing_keys`` or ``type_errors`` in its details, or OK.
        """
        outputs = stage.outputs
        missing = [k for k in self.required_keys if k not in outputs]
        if missing:
            return VerifyResult.failed(
                f"missing required outputs: {', '.join(missing)}", {"missing_keys": missing}
            )
        wrong = [
            f"{key}: expected {_type_name(kind)}, got {type(outputs[key]).__name__}"
            for key, kind in self.type_checks.items()
            if key in outputs and not isinstance(outputs[key], kind)
        ]
        if wrong:
            return VerifyResult.failed(f"type errors: {'; '.join(wrong)}", {"type_errors": wrong})
        return VerifyResult.ok("all required outputs present with the right types")


class CallableVerifier(Verifier):
    """A function ``(stage) -> VerifyResult`` as a verifier.

    Args:
        func: The check.
        max_retries: See :attr:`Verifier.max_retries`.
        retry_delay: See :attr:`Verifier.retry_delay_seconds`.
    """

    def __init__(
        self,
        func: Callable[[StageExecution], VerifyResult],
        max_retries: int = 3,
        retry_delay: float = 1.0,
    ) -> None:
        self._func = func
        self._max_retries = max_retries
        self._retry_delay = retry_delay

    def verify(self, stage: StageExecution) -> VerifyResult:
        """Call the function; anything but a VerifyResult is an error naming it.

        Args:
            stage: Passed to the function.

        Returns:
            The function's result.

        Raises:
            TypeError: The function returned something else, naming it and the type.
        """
        result: object = self._func(stage)  # user code: checked, not trusted
        if not isinstance(result, VerifyResult):
            name = getattr(self._func, "__qualname__", repr(self._func))
            raise TypeError(
                f"verifier {name} returned {type(result).__name__}, expected a VerifyResult"
            )
        return result

    @property
    def max_retries(self) -> int:
        """As given."""
        return self._max_retries

    @property
    def retry_delay_seconds(self) -> float:
        """As given."""
        return self._retry_delay


_verifiers: dict[str, Verifier] = {}
_lock = threading.Lock()


def register_verifier(
    name: str, verifier: Verifier | Callable[[StageExecution], VerifyResult]
) -> Verifier:
    """Register a verifier (or a check function) under ``name``; a later one replaces it.

    Args:
        name: The name `get_verifier` finds it by (a non-empty string).
        verifier: A `Verifier`, or a function ``(stage) -> VerifyResult``.

    Returns:
        The registered :class:`Verifier` (a function is wrapped in :class:`CallableVerifier`).

    Raises:
        ValueError: ``name`` is not a non-empty string.
        TypeError: ``verifier`` is neither a `Verifier` nor callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a verifier name must be a non-empty string, not {name!r}")
    if isinstance(verifier, Verifier):
        made = verifier
    elif callable(verifier):
        made = CallableVerifier(verifier)
    else:
        raise TypeError(
            f"verifier {name!r} must be a Verifier or a function, not {type(verifier).__name__}"
        )
    with _lock:
        _verifiers[name] = made
    return made


def get_verifier(name: str) -> Verifier:
    """The verifier registered as ``name``.

    Args:
        name: The name given to `register_verifier` (or `verifier`).

    Returns:
        The registered `Verifier`.

    Raises:
        KeyError: none is, naming those that are.
    """
    with _lock:
        found = _verifiers.get(name)
        known = sorted(_verifiers)
    if found is None:
        raise KeyError(
            f"no verifier registered as {name!r} (registered: {', '.join(known) or 'none'})"
        )
    return found


@overload
def verifier(
    name: Callable[[StageExecution], VerifyResult],
) -> Callable[[StageExecution], VerifyResult]: ...
@overload
def verifier(
    name: str | None = None,
) -> Callable[
    [Callable[[StageExecution], VerifyResult]], Callable[[StageExecution], VerifyResult]
]: ...
def verifier(name: Any = None) -> Any:
    """Decorator registering a check function: ``@verifier`` or ``@verifier("name")``.

    The function stays as it was; it is registered under ``name`` (default: its name).

    Args:
        name: The name to register under, or (used bare as ``@verifier``) the function.

    Returns:
        The function itself when used bare; else a decorator that registers and returns it.

    Raises:
        ValueError: ``name`` is an empty string.
    """

    def register(
        fn: Callable[[StageExecution], VerifyResult],
    ) -> Callable[[StageExecution], VerifyResult]:
        register_verifier(label or fn.__name__, fn)
        return fn

    if callable(name):
        label = None
        return register(name)
    label = name
    return register


def _type_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__
