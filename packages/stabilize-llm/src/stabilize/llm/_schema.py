"""JSON schemas and argument validation for tools, derived from a function's signature.

Types come from the annotations (through pydantic, so Optional, defaults, Literal, enums,
typed lists and dicts and pydantic models all work); descriptions come from the
Google-style docstring (the summary, and each ``Args:`` entry).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

INJECTED = frozenset({"idempotency_key"})
"""Parameters the engine fills in itself; the model never sees or sets them."""

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?|Attributes):\s*$"
)
_ARG = re.compile(r"^(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


@dataclass
class Docstring:
    """The parts of a Google-style docstring a tool schema uses."""

    summary: str
    args: dict[str, str]


def parse_docstring(doc: str | None) -> Docstring:
    """Split a docstring into its description (before any section) and ``Args:`` entries."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in lines:
        header = _SECTION.match(line.strip())
        if header and (len(line) - len(line.lstrip())) == 0:
            section, current, arg_indent = header.group(1), None, None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in ("Args", "Arguments", "Parameters") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        match = _ARG.match(line.strip())
        if match and (arg_indent is None or indent <= arg_indent):
            arg_indent = indent
            current = match.group(1).lstrip("*")
            args[current] = match.group(3).strip()
        elif current is not None:
            args[current] = f"{args[current]} {line.strip()}".strip()
    text = "\n".join(summary).strip()
    return Docstring(re.sub(r"\s*\n\s*", " ", text), args)


class ArgumentError(ValueError):
    """Arguments a model sent do not fit the tool's signature."""


@dataclass
class Signature:
    """A tool's parameters: their JSON schema and a validator for incoming arguments."""

    parameters: dict[str, Any]
    model: type[pydantic.BaseModel]
    names: dict[str, str]  # model field -> parameter name
    injected: frozenset[str]

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check and convert the model's arguments into keyword arguments for the function.

        Raises:
            ArgumentError: unknown, missing or ill-typed arguments, explained for the model.
        """
        if "_raw" in arguments and len(arguments) == 1:
            raise ArgumentError(f"arguments must be a JSON object, got {arguments['_raw']!r}")
        try:
            instance = self.model.model_validate(dict(arguments))
        except pydantic.ValidationError as exc:
            raise ArgumentError(_explain(exc)) from None
        return {self.names[f]: getattr(instance, f) for f in self.names}


def signature_of(fn: Callable[..., Any], arg_docs: Mapping[str, str]) -> Signature:
    """Build the JSON schema and validator of ``fn``'s parameters."""
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except (NameError, TypeError) as exc:
        raise TypeError(f"cannot resolve the type hints of tool {fn.__name__!r}: {exc}") from exc
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}
    injected = set()
    for i, (name, param) in enumerate(sig.parameters.items()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in INJECTED:
            injected.add(name)
            continue
        annotation = hints.get(name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        # Internal field names keep parameter names such as "json" or "copy" from
        # shadowing BaseModel attributes; the schema and validation use the alias.
        field = f"p{i}"
        fields[field] = (
            annotation,
            pydantic.Field(default, alias=name, description=arg_docs.get(name) or None),
        )
        names[field] = name
    model = pydantic.create_model(
        f"{fn.__name__}_arguments",
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False),
        **fields,
    )
    schema = _clean(model.model_json_schema(by_alias=True))
    schema.setdefault("properties", {})
    schema.setdefault("required", [])
    return Signature(schema, model, names, frozenset(injected))


def _clean(node: Any) -> Any:
    """Drop pydantic's generated titles (noise for a model); keep everything else."""
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _explain(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error.get("loc", ())) or "arguments"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(problems)
