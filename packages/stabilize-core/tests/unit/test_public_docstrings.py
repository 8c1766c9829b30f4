"""Every public function and method of `stabilize.__all__` documents its arguments (issue 17).

So do the modules that offer core's API to extensions (issue 18): ``stabilize.tasks``,
``stabilize.cli`` and ``stabilize.orchestrator``.

A callable that takes arguments (besides ``self``/``cls``) has a Google-style ``Args:``
section naming each of them. A class's own ``__init__`` is covered by the class docstring
(or its own). Enums and exceptions are skipped; properties take no arguments.
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

# The names checked in each module (None: its whole __all__). stabilize.tasks also
# re-exports names that stabilize.__all__ covers.
MODULES: dict[str, list[str] | None] = {
    "stabilize": None,
    "stabilize.tasks": ["ContextReader", "TaskConfigError", "mask_secrets"],
    "stabilize.cli": None,
    "stabilize.orchestrator": None,
}


def public_callables(
    package: ModuleType, names: list[str] | None = None
) -> Iterator[tuple[str, Callable[..., Any]]]:
    for name in package.__all__ if names is None else names:
        obj = getattr(package, name)
        if inspect.isroutine(obj):
            yield name, obj
        if not inspect.isclass(obj) or issubclass(obj, enum.Enum | BaseException):
            continue
        # A dataclass's generated __init__ is documented by its Attributes: section.
        init = vars(obj).get("__init__")
        if inspect.isfunction(init) and not dataclasses.is_dataclass(obj):
            doc = f"{obj.__doc__ or ''}\n{init.__doc__ or ''}"
            yield f"{name}.__init__", _with_doc(init, doc)
        for attr, value in vars(obj).items():
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            if not attr.startswith("_") and inspect.isfunction(value):
                yield f"{name}.{attr}", value


def _with_doc(fn: Callable[..., Any], doc: str) -> Callable[..., Any]:
    def proxy(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    proxy.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    proxy.__doc__ = doc
    return proxy


def undocumented_arguments(fn: Callable[..., Any]) -> list[str]:
    doc = inspect.cleandoc(fn.__doc__ or "")
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    missing = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", "cls"):
            continue
        star = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        if not re.search(rf"^\s+{re.escape(star + p.name)}( \(.*\))?:", section, re.M):
            missing.append(star + p.name)
    return missing


@pytest.mark.parametrize("module", MODULES)
def test_every_argument_of_the_public_api_is_documented(module: str) -> None:
    package = importlib.import_module(module)
    found = {
        name: undocumented_arguments(fn) for name, fn in public_callables(package, MODULES[module])
    }
    missing = {name: args for name, args in found.items() if args}
    assert missing == {}


def test_the_check_finds_an_undocumented_argument() -> None:
    def documented(a: int, *rest: int, **extra: int) -> None:
        """Do it.

        Args:
            a: One.
            *rest: More.
            **extra: Named.
        """

    def half(a: int, b: int) -> None:
        """Do it.

        Args:
            a: One.
        """

    def bare(a: int) -> None:
        """Do it with ``a``."""

    assert undocumented_arguments(documented) == []
    assert undocumented_arguments(half) == ["b"]
    assert undocumented_arguments(bare) == ["a"]
