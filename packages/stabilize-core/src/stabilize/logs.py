"""Structured logging: JSON lines with the workflow, stage and task ids bound.

Standard :mod:`logging` only (no dependency). Values bound with :func:`bind_context` live in
a :class:`~contextvars.ContextVar`, so they follow the thread or the asyncio task that bound
them. The engine binds ``workflow_id``, ``stage_id``, ``stage_ref``, ``task_id`` and
``task_name`` while a task runs, so whatever the task logs (and what the engine logs about
it) carries them::

    configure_logging(level="INFO")          # JSON lines on stderr
    log = get_logger("my_app")

    class Fetch(Task):
        def execute(self, stage):
            log.info("fetching", extra={"url": stage.context["url"]})
            # {"ts": ..., "level": "INFO", "logger": "my_app", "message": "fetching",
            #  "url": ..., "workflow_id": ..., "stage_id": ..., "task_name": ...}
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

_bound: ContextVar[Mapping[str, Any]] = ContextVar(
    "stabilize_log_context", default=MappingProxyType({})
)

# Attributes every LogRecord has: anything else on a record came from ``extra``.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def bind_context(**values: Any) -> None:
    """Add ``values`` to every record logged from this thread or task from now on.

    The values live in a context variable: asyncio tasks created afterwards inherit them
    (they copy the context); other threads do not see them.

    Args:
        **values: Field names and values to add (a value given in ``extra`` wins).
    """
    _bound.set({**_bound.get(), **values})


def unbind_context(*keys: str) -> None:
    """Stop adding ``keys``.

    Only this thread or asyncio task's bindings change.

    Args:
        *keys: Names bound by `bind_context`; names not bound are ignored.
    """
    current = _bound.get()
    _bound.set({k: v for k, v in current.items() if k not in keys})


def clear_context() -> None:
    """Stop adding anything bound so far.

    Only this thread or asyncio task's bindings (`bind_context`) are dropped.
    """
    _bound.set({})


def get_context() -> dict[str, Any]:
    """What is bound now."""
    return dict(_bound.get())


@contextlib.contextmanager
def logging_context(**values: Any) -> Iterator[None]:
    """Bind ``values`` inside a ``with`` block only."""
    token = _bound.set({**_bound.get(), **values})
    try:
        yield
    finally:
        _bound.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound values onto each record (a value given in ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the bound values; never drops a record."""
        for key, value in _bound.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the bound values, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (values JSON cannot hold become their repr)."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=repr, ensure_ascii=False)


class _ContextText(logging.Formatter):
    """Plain text with the bound values appended as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        bound = {k: getattr(record, k) for k in _bound.get() if hasattr(record, k)}
        if not bound:
            return text
        return text + " " + " ".join(f"{k}={v}" for k, v in bound.items())


def configure_logging(
    level: int | str = logging.INFO,
    *,
    json_format: bool = True,
    stream: IO[str] | None = None,
    logger: str = "stabilize",
) -> logging.Handler:
    """Send ``logger``'s records (the engine's by default; ``""`` for all) to ``stream``.

    Calling it again replaces the handler it installed before.

    Args:
        level: The lowest level logged.
        json_format: JSON lines (default) or plain text with ``key=value`` context.
        stream: Where to write (default: stderr).
        logger: The logger to configure.

    Returns:
        The handler it installed.
    """
    target = logging.getLogger(logger)
    for old in [h for h in target.handlers if getattr(h, "_stabilize", False)]:
        target.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._stabilize = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else _ContextText("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    target.addHandler(handler)
    target.setLevel(level)
    return handler


def get_logger(name: str | None = None) -> logging.Logger:
    """A standard logger (``stabilize`` when no name is given).

    Args:
        name: The logger's name (default: ``stabilize``, the engine's own).

    Returns:
        The `logging.Logger` of that name.
    """
    return logging.getLogger(name or "stabilize")


def workflow_logger(
    workflow_id: str, name: str | None = None
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records carry ``workflow_id``.

    Args:
        workflow_id: The id added to each record.
        name: The underlying logger's name (default: ``stabilize``).

    Returns:
        A `logging.LoggerAdapter` adding the id as a record field.
    """
    return logging.LoggerAdapter(get_logger(name), {"workflow_id": workflow_id})


def stage_logger(
    workflow_id: str, stage_id: str, name: str | None = None
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records carry ``workflow_id`` and ``stage_id``.

    Args:
        workflow_id: The workflow id added to each record.
        stage_id: The stage id added to each record.
        name: The underlying logger's name (default: ``stabilize``).

    Returns:
        A `logging.LoggerAdapter` adding both ids as record fields.
    """
    return logging.LoggerAdapter(
        get_logger(name), {"workflow_id": workflow_id, "stage_id": stage_id}
    )


def task_logger(
    workflow_id: str, stage_id: str, task_id: str, name: str | None = None
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose records carry ``workflow_id``, ``stage_id`` and ``task_id``.

    Args:
        workflow_id: The workflow id added to each record.
        stage_id: The stage id added to each record.
        task_id: The task id added to each record.
        name: The underlying logger's name (default: ``stabilize``).

    Returns:
        A `logging.LoggerAdapter` adding the three ids as record fields.
    """
    extra = {"workflow_id": workflow_id, "stage_id": stage_id, "task_id": task_id}
    return logging.LoggerAdapter(get_logger(name), extra)


def task_log_context(workflow_id: str | None, stage: Any, task_id: str) -> Mapping[str, Any]:
    """The values the engine binds while a task runs."""
    task = next((t for t in stage.tasks if t.id == task_id), None)
    return {
        "workflow_id": workflow_id,
        "stage_id": stage.id,
        "stage_ref": stage.ref_id,
        "task_id": task_id,
        "task_name": task.name if task is not None else None,
    }


def bind_task(values: Mapping[str, Any]) -> Any:
    """Bind ``values`` for a running task; returns the token :func:`unbind_task` takes."""
    return _bound.set({**_bound.get(), **values})


def unbind_task(token: Any) -> None:
    """Undo :func:`bind_task`."""
    _bound.reset(token)
