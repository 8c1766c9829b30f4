"""The public API of every extension has docstrings, each argument named (issue 17).

Core checks its own (packages/stabilize-core/tests/unit/test_public_docstrings.py, which
also runs without the extensions); here, where every member is installed, one check covers
the extensions and the monitor.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

PACKAGES = ["stabilize.hitl", "stabilize.llm", "stabilize.streaming", "stabilize_monitor"]


def public_callables(package: ModuleType) -> Iterator[tuple[str, Callable[..., Any]]]:
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


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_class_and_function_has_a_docstring(name: str) -> None:
    package = importlib.import_module(name)
    missing = []
    for export in package.__all__:
        obj = getattr(package, export)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not (isinstance(doc, str) and doc.strip()):
            missing.append(export)
    assert missing == []


@pytest.mark.parametrize("name", PACKAGES)
def test_every_argument_of_the_public_api_is_documented(name: str) -> None:
    """An ``Args:`` entry for each argument (``__init__``: in the class docstring)."""
    package = importlib.import_module(name)
    missing = {}
    for export, fn in public_callables(package):
        owner = getattr(package, export.split(".")[0])
        owner_doc = inspect.cleandoc(owner.__doc__ or "") if export.endswith(".__init__") else ""
        args = undocumented_arguments(fn, owner_doc)
        if args:
            missing[export] = args
    assert missing == {}


def test_the_argument_check_finds_an_undocumented_argument() -> None:
    def half(a: int, *rest: int, **extra: int) -> None:
        """Do it.

        Args:
            a: One.
            *rest: More.
        """

    assert undocumented_arguments(half) == ["**extra"]
