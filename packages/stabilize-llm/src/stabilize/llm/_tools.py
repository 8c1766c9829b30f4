"""Tools: plain functions a model may call, with schemas, validation and dispatch."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, overload

from stabilize.errors import PermanentError, TransientError
from stabilize.llm._schema import ArgumentError, parse_docstring, signature_of
from stabilize.llm._types import ToolCall

log = logging.getLogger("stabilize.llm")

ToolErrorPolicy = Literal["auto", "model", "fail"]
"""What an exception from a tool's own code does (see :meth:`ToolRegistry.dispatch`)."""

TOOL_ERROR_POLICIES: tuple[ToolErrorPolicy, ...] = ("auto", "model", "fail")

PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (
    NameError,
    TypeError,
    AttributeError,
    ImportError,
    SyntaxError,
    NotImplementedError,
)
"""Exceptions that mean the tool's code is wrong, not the model's request.

Under the ``"auto"`` policy these fail the stage with their traceback: the model cannot fix
a typo in a tool, and feeding it the error would let the stage succeed around a bug.
``KeyError``, ``IndexError``, ``ValueError`` and the rest still go to the model, since tools
commonly raise them for a request the model can correct (an unknown id, a bad value).
(``TypeError`` from bad arguments cannot happen here: arguments are validated first.)
"""


class ToolError(Exception):
    """Raised by a tool on purpose: its message goes back to the model as ``ERROR: ...``.

    Use it for failures the model can act on (not found, not allowed, try another value);
    it is never treated as a bug, whatever the policy.
    """


@dataclass
class ToolResult:
    """What a tool call produced, as fed back to the model.

    Attributes:
        content: The text the model reads (a JSON dump when the tool returned data, or
            ``"ERROR: ..."``).
        is_error: True when the call failed or its arguments were invalid.
    """

    content: str
    is_error: bool = False


class Tool:
    """A function a model may call, with its name, description and parameter schema.

    Calling a :class:`Tool` calls the function, so a decorated function stays usable as
    before. Parameters named ``idempotency_key`` are hidden from the model and filled in
    by the agent with a key stable across crashes and retries (pass it on to the external
    service so a repeated call is recognised).

    Args:
        fn: The function (plain or ``async def``).
        name: The name the model sees (default: the function's name).
        description: What the tool does (default: the docstring's description).

    Raises:
        TypeError: The function's type hints cannot be resolved, naming it.
    """

    def __init__(
        self, fn: Callable[..., Any], name: str | None = None, description: str | None = None
    ) -> None:
        doc = parse_docstring(fn.__doc__)
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description or doc.summary or self.name
        self.signature = signature_of(fn, doc.args)
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments."""
        return self.signature.parameters

    @property
    def accepts_idempotency_key(self) -> bool:
        """True when the function takes an ``idempotency_key`` parameter."""
        return "idempotency_key" in self.signature.injected

    def schema(self) -> dict[str, Any]:
        """The tool in the OpenAI ``tools`` format (Ollama takes the same)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def invoke(self, arguments: Mapping[str, Any], idempotency_key: str | None = None) -> Any:
        """Validate ``arguments`` and call the function (an async one is run to completion).

        Args:
            arguments: The model's arguments, by parameter name.
            idempotency_key: Passed to a function that takes ``idempotency_key``.

        Returns:
            What the function returned.

        Raises:
            ArgumentError: the arguments do not fit the signature (nothing was called).
            Exception: whatever the function raises, unchanged.
        """
        kwargs = self.signature.validate(arguments)
        if self.accepts_idempotency_key:
            kwargs["idempotency_key"] = idempotency_key
        value = self.fn(**kwargs)
        if inspect.isawaitable(value):
            value = _run(_await(value))
        return value

    async def ainvoke(
        self, arguments: Mapping[str, Any], idempotency_key: str | None = None
    ) -> Any:
        """Like :meth:`invoke`, awaiting an async function on the running loop.

        Args:
            arguments: The model's arguments, by parameter name.
            idempotency_key: Passed to a function that takes ``idempotency_key``.

        Returns:
            What the function returned (awaited).

        Raises:
            ArgumentError: the arguments do not fit the signature (nothing was called).
            Exception: whatever the function raises, unchanged.
        """
        kwargs = self.signature.validate(arguments)
        if self.accepts_idempotency_key:
            kwargs["idempotency_key"] = idempotency_key
        value = self.fn(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function into a :class:`Tool`: ``@tool`` or ``@tool(name=..., description=...)``.

    The schema comes from the type hints (str, int, float, bool, Optional, defaults,
    Literal, Enum, ``list[...]``, ``dict[...]``, pydantic models) and the Google-style
    docstring (the description, and ``Args:`` for each parameter).

    Args:
        fn: The function (plain or ``async def``), when used bare as ``@tool``.
        name: The name the model sees (default: the function's name).
        description: What the tool does (default: the docstring's description).

    Returns:
        The :class:`Tool` when ``fn`` is given; else a decorator that makes one.

    Raises:
        TypeError: The function's type hints cannot be resolved, naming it.
    """
    if fn is not None:
        return Tool(fn, name, description)

    def decorate(f: Callable[..., Any]) -> Tool:
        return Tool(f, name, description)

    return decorate


class ToolRegistry:
    """The tools an agent may use, looked up by name.

    ``ToolRegistry().add(lookup).add(send_email)`` (``add`` returns the registry).
    """

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(
        self,
        fn: Tool | Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> ToolRegistry:
        """Add a tool (a :class:`Tool` or a plain function); return the registry.

        Args:
            fn: A :class:`Tool`, or a function whose signature and docstring describe it.
            name: The name the model calls it by (default: the tool's or function's).
            description: What the model reads about it (default: from the docstring).

        Returns:
            This registry, so that calls chain.

        Raises:
            ValueError: another tool already has that name.
        """
        item = fn if isinstance(fn, Tool) and name is None and description is None else None
        if item is None:
            base = fn.fn if isinstance(fn, Tool) else fn
            item = Tool(base, name or (fn.name if isinstance(fn, Tool) else None), description)
        if item.name in self._tools:
            raise ValueError(f"a tool named {item.name!r} is already registered")
        self._tools[item.name] = item
        return self

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, if any.

        Args:
            name: The tool's name.

        Returns:
            The tool, or None when none has that name.
        """
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        """The tool names, in the order they were added."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool in the OpenAI ``tools`` format."""
        return [t.schema() for t in self._tools.values()]

    def dispatch(
        self,
        call: ToolCall | Mapping[str, Any],
        idempotency_key: str | None = None,
        *,
        errors: ToolErrorPolicy = "auto",
    ) -> ToolResult:
        """Run one tool call and return what to feed back to the model.

        An unknown tool, invalid arguments and a :class:`ToolError` become an
        ``"ERROR: ..."`` result, so that the model can correct itself. A
        :class:`~stabilize.TransientError` raised by the tool propagates, so that the
        engine retries the call (with the same idempotency key). Any other exception is
        logged (logger ``stabilize.llm``) and, depending on ``errors``:

        - ``"auto"`` (default): one of :data:`PROGRAMMING_ERRORS` (a bug in the tool)
          raises :class:`~stabilize.PermanentError` naming the tool, chained to it, so that
          the stage fails with the traceback; others become an ``"ERROR: ..."`` result.
        - ``"model"``: every exception becomes an ``"ERROR: ..."`` result.
        - ``"fail"``: every exception raises, as a bug does under ``"auto"``.

        Args:
            call: A :class:`ToolCall`, or a mapping with ``name`` and ``arguments``.
            idempotency_key: Passed to a tool that takes ``idempotency_key``.
            errors: What an unexpected exception of the tool does (see above).

        Returns:
            The text to send back to the model, and whether it is an error.

        Raises:
            PermanentError: the tool failed and the policy says the stage fails.
            TransientError: raised by the tool.
        """
        found = self._lookup(call)
        if isinstance(found, ToolResult):
            return found
        item, arguments = found
        try:
            value = item.invoke(arguments, idempotency_key)
        except ArgumentError as exc:
            return ToolResult(f"ERROR: invalid arguments for tool {item.name!r}: {exc}", True)
        except TransientError:
            raise
        except Exception as exc:
            return tool_failure(item.name, exc, errors)
        return ToolResult(render(value))

    async def adispatch(
        self,
        call: ToolCall | Mapping[str, Any],
        idempotency_key: str | None = None,
        *,
        errors: ToolErrorPolicy = "auto",
    ) -> ToolResult:
        """Like :meth:`dispatch`, on the running event loop.

        Args:
            call: A :class:`ToolCall`, or a mapping with ``name`` and ``arguments``.
            idempotency_key: Passed to a tool that takes ``idempotency_key``.
            errors: What an unexpected exception of the tool does (see :meth:`dispatch`).

        Returns:
            The text to send back to the model, and whether it is an error.

        Raises:
            PermanentError: the tool failed and the policy says the stage fails.
            TransientError: raised by the tool.
        """
        found = self._lookup(call)
        if isinstance(found, ToolResult):
            return found
        item, arguments = found
        try:
            value = await item.ainvoke(arguments, idempotency_key)
        except ArgumentError as exc:
            return ToolResult(f"ERROR: invalid arguments for tool {item.name!r}: {exc}", True)
        except TransientError:
            raise
        except Exception as exc:
            return tool_failure(item.name, exc, errors)
        return ToolResult(render(value))

    def _lookup(
        self, call: ToolCall | Mapping[str, Any]
    ) -> tuple[Tool, dict[str, Any]] | ToolResult:
        parsed = call if isinstance(call, ToolCall) else ToolCall.from_dict(call)
        item = self._tools.get(parsed.name)
        if item is None:
            known = ", ".join(self._tools) or "none"
            return ToolResult(f"ERROR: unknown tool {parsed.name!r} (available: {known})", True)
        return item, dict(parsed.arguments)


def tool_failure(name: str, exc: Exception, errors: ToolErrorPolicy) -> ToolResult:
    """The result for the model when tool ``name`` raised ``exc``, or the error that fails.

    Raises:
        PermanentError: ``exc`` is a bug under ``errors`` (chained: its traceback is kept).
    """
    if isinstance(exc, ToolError):
        log.info("tool %r refused the call: %s", name, exc)
        return ToolResult(f"ERROR: {exc}", True)
    if errors == "fail" or (errors == "auto" and isinstance(exc, PROGRAMMING_ERRORS)):
        log.error("tool %r failed with %s: failing the stage", name, type(exc).__name__)
        raise PermanentError(
            f"tool {name!r} raised {type(exc).__name__}: {exc} (a bug in the tool's code "
            "fails the stage; raise ToolError for an error the model should see)"
        ) from exc
    log.warning("tool %r raised %s: %s (shown to the model)", name, type(exc).__name__, exc)
    return ToolResult(f"ERROR: {type(exc).__name__}: {exc}", True)


def render(value: Any) -> str:
    """A tool's return value as text for the model (strings as they are, the rest as JSON)."""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


async def _await(value: Any) -> Any:
    return await value


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
