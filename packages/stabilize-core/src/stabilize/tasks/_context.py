"""Reading a task's configuration from the stage context, with clear errors.

Every built-in task (shell, HTTP, Python, Docker, SSH) validates its keys up front
through :class:`ContextReader`: a missing or malformed key fails the task at once with a
:class:`TaskConfigError` naming the task and the key, before anything runs. The
extensions' tasks (``LLMTask``, ``ApprovalTask``, ...) read theirs the same way:
``ContextReader``, ``TaskConfigError`` and ``mask_secrets`` are public, exported by
:mod:`stabilize.tasks`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from stabilize.errors import PermanentError

T = TypeVar("T")

_MISSING: Any = object()


class TaskConfigError(PermanentError):
    """A task's context key is missing or has the wrong type or value.

    A :class:`~stabilize.errors.PermanentError`: the task fails at once (TERMINAL), with
    no retry, and the message names the task and the key.
    """


class ContextReader:
    """Typed access to a stage context on behalf of one task.

    Each reader method returns the value of one key, checked: a missing required key or
    a value of the wrong type raises :class:`TaskConfigError` naming the task and the
    key. A key whose value is None counts as missing. Where a method takes ``default``,
    leaving it out makes the key required, and the default, when given, is returned as
    it is (unchecked) for a missing key.

    Args:
        context: The stage context the task received.
        task: The task's name, used in error messages (``"ShellTask"``).
    """

    def __init__(self, context: Mapping[str, Any], task: str) -> None:
        self.context = context
        self.task = task

    def error(self, key: str, problem: str) -> TaskConfigError:
        """The error saying that context key ``key`` has ``problem``.

        Args:
            key: The context key.
            problem: What is wrong, continuing "context key 'key' ..." (``"is required"``).

        Returns:
            The error, for the caller to raise.
        """
        return TaskConfigError(f"{self.task}: context key {key!r} {problem}")

    def has(self, key: str) -> bool:
        """Whether the context holds ``key`` with a value other than None.

        Args:
            key: The context key.

        Returns:
            True when ``key`` is present and not None.
        """
        return self.context.get(key) is not None

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value as it is, of any type.

        Args:
            key: The context key.
            default: Returned when the key is missing (leave out: the key is required).

        Returns:
            The value, or ``default``.

        Raises:
            TaskConfigError: The key is missing and no default is given.
        """
        value = self.context.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        return value

    def text(self, key: str, default: Any = _MISSING) -> Any:
        """A string.

        Args:
            key: The context key.
            default: Returned when the key is missing (leave out: the key is required).

        Returns:
            The string, or ``default``.

        Raises:
            TaskConfigError: The key is missing and required, or is not a string.
        """
        value = self.raw(key, default)
        if value is default:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {type(value).__name__}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        """A boolean (``true``/``false`` strings are accepted too, in any case).

        Args:
            key: The context key.
            default: The value when the key is missing.

        Returns:
            The boolean.

        Raises:
            TaskConfigError: The value is neither a boolean nor ``"true"``/``"false"``.
        """
        value = self.raw(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise self.error(key, f"must be true or false, not {value!r}")

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: float | None = None,
        integer: bool = False,
    ) -> Any:
        """A number (booleans are refused).

        Args:
            key: The context key.
            default: Returned when the key is missing (leave out: the key is required).
            minimum: The smallest value accepted, if any.
            integer: Accept only whole numbers, and return an ``int`` (``3.0`` gives ``3``).

        Returns:
            The number, or ``default``.

        Raises:
            TaskConfigError: The key is missing and required, is not a number, is not
                whole when ``integer`` asks for it, or is below ``minimum``.
        """
        value = self.raw(key, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, not {type(value).__name__}")
        if integer and not (isinstance(value, int) or float(value).is_integer()):
            raise self.error(key, f"must be a whole number, not {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum:g}, not {value!r}")
        return int(value) if integer else value

    def text_list(self, key: str, default: Any = _MISSING) -> Any:
        """A list of strings (a tuple is accepted and returned as a list).

        Args:
            key: The context key.
            default: Returned when the key is missing (leave out: the key is required).

        Returns:
            A new list of the strings, or ``default``.

        Raises:
            TaskConfigError: The key is missing and required, or is not a list of strings.
        """
        value = self.raw(key, default)
        if value is default:
            return value
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be a list of strings")
        return list(value)

    def text_map(self, key: str, default: Any = _MISSING) -> Any:
        """A mapping of strings to strings (numbers and booleans are turned into text).

        Args:
            key: The context key.
            default: Returned when the key is missing (leave out: the key is required).

        Returns:
            A new dict of strings (``True`` becomes ``"true"``), or ``default``.

        Raises:
            TaskConfigError: The key is missing and required, is not a mapping, or has an
                entry whose key is not a string or whose value is None, a list, a tuple
                or a dict.
        """
        value = self.raw(key, default)
        if value is default:
            return value
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a mapping, not {type(value).__name__}")
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or isinstance(v, dict | list | tuple) or v is None:
                raise self.error(key, f"must map strings to strings; entry {k!r} does not")
            out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        return out

    def choice(self, key: str, choices: Iterable[str], default: Any = _MISSING) -> Any:
        """One string out of ``choices``.

        Args:
            key: The context key.
            choices: The accepted values.
            default: Returned when the key is missing (leave out: the key is required).

        Returns:
            The value, or ``default``.

        Raises:
            TaskConfigError: The key is missing and required, or is not one of ``choices``.
        """
        value = self.text(key, default)
        allowed = list(choices)
        if value is not default and value not in allowed:
            raise self.error(key, f"must be one of {allowed}, not {value!r}")
        return value


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret value in ``text`` with ``***``.

    Longer secrets are replaced first, so a secret that contains another is hidden whole.

    Args:
        text: The text to show (an error message, a URL, captured output).
        secrets: The values to hide; empty ones are ignored.

    Returns:
        The text with each secret replaced by ``***``.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def mask_capped(text: str, secrets: Sequence[str], cut_end: bool, cut_start: bool = False) -> str:
    """Mask ``secrets`` in ``text``, including a secret cut in half where the text was cut.

    Args:
        text: The captured text.
        secrets: The values to hide.
        cut_end: The text was cut at its end (its end may hold a secret's beginning).
        cut_start: The text was cut at its start (its start may hold a secret's end).

    Returns:
        The text with every secret (and secret fragment at a cut) replaced by ``***``.
    """
    text = mask_secrets(text, secrets)
    for secret in (s for s in secrets if s):
        if cut_end:
            for n in range(min(len(secret) - 1, len(text)), 0, -1):
                if text.endswith(secret[:n]):
                    text = text[:-n] + "***"
                    break
        if cut_start:
            for n in range(min(len(secret) - 1, len(text)), 0, -1):
                if text.startswith(secret[-n:]):
                    text = "***" + text[n:]
                    break
    return text


def secret_values(reader: ContextReader, key: str = "secrets") -> list[str]:
    """The values to mask: ``secrets`` lists context keys whose values are secret."""
    names = reader.text_list(key, [])
    values = []
    for name in names:
        value = reader.context.get(name)
        if value is not None:
            values.append(str(value))
    return values


def cap_output(data: bytes, limit: int) -> tuple[str, bool]:
    """Decode at most ``limit`` bytes (UTF-8, replacing bad bytes); say if cut."""
    truncated = len(data) > limit
    return data[:limit].decode("utf-8", errors="replace"), truncated


def read_env(reader: ContextReader) -> dict[str, str]:
    """``env`` merged over ``os.environ`` (or alone when ``inherit_env`` is false)."""
    extra: dict[str, str] = reader.text_map("env", {})
    base = dict(os.environ) if reader.flag("inherit_env", True) else {}
    base.update(extra)
    return base


def read_cwd(reader: ContextReader) -> str | None:
    """``cwd``, which must be an existing directory."""
    cwd: str | None = reader.text("cwd", None)
    if cwd is not None and not os.path.isdir(cwd):
        raise reader.error("cwd", f"must be an existing directory, not {cwd!r}")
    return cwd


def timeout_of(context: Mapping[str, Any], default: float) -> float:
    """``timeout`` read leniently (for sizing the engine's limit; execute validates it)."""
    value = context.get("timeout")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default
