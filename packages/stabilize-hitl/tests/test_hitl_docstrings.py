"""The public API of `stabilize.hitl` has docstrings, each argument named (issue 17)."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import stabilize.hitl as package


def test_every_public_class_and_function_has_a_docstring() -> None:
    missing = []
    for name in package.__all__:
        obj = getattr(package, name)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not (isinstance(doc, str) and doc.strip()):
            missing.append(name)
    assert missing == []


def public_callables() -> Iterator[tuple[str, Callable[..., Any]]]:
    for name in package.__all__:
        obj = getattr(package, name)
        if inspect.isroutine(obj):
            yield name, obj
        if not inspect.isclass(obj) or issubclass(obj, enum.Enum | BaseException):
            continue
        # A dataclass's generated __init__ is documented by its Attributes: section, and a
        # Protocol's is typing's placeholder.
        init = vars(obj).get("__init__")
        generated = dataclasses.is_dataclass(obj) or getattr(obj, "_is_protocol", False)
        if inspect.isfunction(init) and not generated:
            yield f"{name}.__init__", init
        for attr, value in vars(obj).items():
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            if not attr.startswith("_") and inspect.isfunction(value):
                yield f"{name}.{attr}", value


def undocumented_arguments(fn: Callable[..., Any], owner_doc: str = "") -> list[str]:
    doc = f"{owner_doc}\n{inspect.cleandoc(fn.__doc__ or '')}"
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    missing = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", "cls"):
            continue
        star = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        if not re.search(rf"^\s+{re.escape(star + p.name)}( \(.*\))?:", section, re.M):
            missing.append(star + p.name)
    return missing


def test_every_argument_of_the_public_api_is_documented() -> None:
    """Issue 17: an ``Args:`` entry for each argument (``__init__``: in the class docstring)."""
    missing = {}
    for name, fn in public_callables():
        owner = getattr(package, name.split(".")[0])
        owner_doc = inspect.cleandoc(owner.__doc__ or "") if name.endswith(".__init__") else ""
        args = undocumented_arguments(fn, owner_doc)
        if args:
            missing[name] = args
    assert missing == {}


def test_the_argument_check_finds_an_undocumented_argument() -> None:
    def half(a: int, *rest: int, **extra: int) -> None:
        """Do it.

        Args:
            a: One.
            *rest: More.
        """

    assert undocumented_arguments(half) == ["**extra"]
