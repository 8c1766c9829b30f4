"""The generated parts of ``stabilize prompt``: public names, signatures, enums, tasks.

Everything here is read from the installed code (``__all__``, ``inspect.signature``, the
first line of each docstring, the built-in task table), so the reference cannot drift
from it. The text is deterministic: sorted, with no memory address, path or time.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.util
import inspect
import re
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import stabilize
from stabilize import reducers
from stabilize._plugins import OPTIONAL_EXPORTS, export_names
from stabilize.models.stage import StageExecution
from stabilize.tasks import RetryableTask, Task
from stabilize.tasks._declared import BUILTIN_TASK_KEYS

EXTENSIONS: dict[str, str] = {
    "stabilize.llm": "stabilize-llm",
    "stabilize.hitl": "stabilize-hitl",
    "stabilize.streaming": "stabilize-stream",
}
"""Each extension's import package and the distribution that ships it."""

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc):`~?")


def installed(module: str) -> bool:
    """Report whether an extension's import package can be imported.

    Args:
        module: The dotted name, e.g. ``"stabilize.llm"``.

    Returns:
        True when the package is installed (and plugin autoload does not matter here).
    """
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def public_names() -> dict[str, list[str]]:
    """Return every public name, by the module that exports it.

    Returns:
        ``"stabilize"`` with ``stabilize.__all__`` plus the names extensions export lazily
        through ``stabilize.exports``, then each installed extension with its ``__all__``.
    """
    names = {"stabilize": sorted({*stabilize.__all__, *export_names()})}
    for module in EXTENSIONS:
        if installed(module):
            names[module] = sorted(importlib.import_module(module).__all__)
    return names


def first_line(obj: Any) -> str:
    """Return the first line of an object's own docstring ("" when it has none).

    Args:
        obj: A class, function or other object.

    Returns:
        The docstring's first line, stripped.
    """
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or isinstance(obj, str | int | float | tuple | frozenset):
        return ""
    line = inspect.cleandoc(doc).split("\n", 1)[0].strip().replace("``", "`")
    return _ROLE.sub("`", line)


def format_default(value: Any) -> str:
    """Write a parameter's default the same way on every run.

    Args:
        value: The default.

    Returns:
        Its repr for plain values (a set's items sorted), ``Enum.MEMBER`` for enum members,
        ``...`` for a dataclass factory, a function's qualified name, else ``<TypeName>``.
    """
    if value is dataclasses.MISSING or repr(value) == "<factory>":
        return "..."
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if inspect.isroutine(value) or inspect.isclass(value):
        module = getattr(value, "__module__", None) or ""
        return f"{module}.{value.__qualname__}" if module else value.__qualname__
    if isinstance(value, set | frozenset):  # a set's order changes with the hash seed
        items = ", ".join(sorted(format_default(v) for v in value))
        return f"{type(value).__name__}({{{items}}})" if items else f"{type(value).__name__}()"
    text = repr(value)
    if _ADDRESS.search(text) or text.startswith("<"):
        return f"<{type(value).__name__}>"
    return text


def signature(obj: Any) -> str:
    """Return a callable's parameters without annotations, e.g. ``(url, *, schema=None)``.

    Args:
        obj: A class or function.

    Returns:
        The parameter list; private (underscored) parameters are left out. ``""`` when
        the object has no signature.
    """
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    parts: list[str] = []
    star_done = False
    for param in sig.parameters.values():
        if param.name.startswith("_"):
            continue
        text = param.name
        if param.kind is param.VAR_POSITIONAL:
            text, star_done = f"*{param.name}", True
        elif param.kind is param.VAR_KEYWORD:
            text = f"**{param.name}"
        elif param.kind is param.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if param.default is not param.empty:
            text += f"={format_default(param.default)}"
        parts.append(text)
    return f"({', '.join(parts)})"


def describe(name: str, obj: Any, *, with_signature: bool = True) -> str:
    """Return one Markdown list item for a public name.

    Args:
        name: The exported name.
        obj: The object it names.
        with_signature: False to write ``name(...)`` and the signature of its factory
            (see ``_FIELDS_ELSEWHERE``).

    Returns:
        ``- `name(sig)` — first docstring line``; for a class also its public methods
        and properties, for an enum its members.
    """
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        members = ", ".join(m.name for m in obj)
        return f"- `{name}` (enum: {members}) — {first_line(obj)}"
    if inspect.isclass(obj) or inspect.isroutine(obj):
        head = f"- `{name}{signature(obj) if with_signature else '(...)'}`"
    else:
        head = f"- `{name}` = `{format_default(obj)}`"
    line = first_line(obj)
    text = f"{head} — {line}" if line else head
    if inspect.isclass(obj) and not _is_task_implementation(obj):
        methods = _members(obj)
        if methods:
            text += f" Members: {', '.join(methods)}."
        if not with_signature:
            factory = _FIELDS_ELSEWHERE[name]
            text += f" `{name}.{factory}{signature(getattr(obj, factory))}`."
    return text


def _is_task_implementation(cls: type) -> bool:
    """A task class other than the bases: its members are the ``Task`` hooks, listed there."""
    return issubclass(cls, Task) and cls not in (Task, RetryableTask)


def _members(cls: type) -> list[str]:
    """The public methods and properties a class defines itself (not inherited ones)."""
    found = {
        attr
        for attr, value in vars(cls).items()
        if not attr.startswith("_")
        and (inspect.isroutine(value) or isinstance(value, property | classmethod | staticmethod))
    }
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return sorted(found - fields - _PLUMBING)


_PLUMBING = frozenset({"to_dict", "from_dict", "to_row", "from_row", "aliases"})
"""Serialisation helpers and the like, left out of the member lists to save room."""


def api_section() -> str:
    """Return the "Public API" section: every public name of every installed package.

    Returns:
        Markdown: one subsection per module, one line per name.
    """
    out = ["## Public API (generated)", ""]
    for module_name, names in public_names().items():
        module: ModuleType = importlib.import_module(module_name)
        out.append(f"### `{module_name}`")
        out.append("")
        lazy: list[str] = []
        for name in names:
            if module is stabilize and name not in stabilize.__all__:
                lazy.append(name)
                continue
            obj = getattr(module, name)
            out.append(describe(name, obj, with_signature=name not in _FIELDS_ELSEWHERE))
        if lazy:
            out.append("- Re-exported lazily from extensions: " + ", ".join(_lazy(n) for n in lazy))
        out.append("")
    return "\n".join(out)


_FIELDS_ELSEWHERE = {"StageExecution": "for_task", "TaskExecution": "create", "Workflow": "create"}
"""Dataclasses built through a factory: the factory's signature is given instead of every
field's (the stage's fields and defaults are in Stage properties)."""


def _lazy(name: str) -> str:
    """``name`` with the extension it comes from, or the distribution to install."""
    try:
        owner = getattr(getattr(stabilize, name), "__module__", "") or ""
    except ImportError:
        return f"`{name}` (install {_lazy_dist(name)})"
    return f"`{name}` ({_package(owner)})"


def _lazy_dist(name: str) -> str:
    return OPTIONAL_EXPORTS.get(name, "an extension")


def _package(module: str) -> str:
    for ext in EXTENSIONS:
        if module == ext or module.startswith(ext + "."):
            return ext
    return module


def enum_lines(enums: Iterable[type[enum.Enum]]) -> str:
    """Return one line per enum with its members.

    Args:
        enums: Enum classes.

    Returns:
        Markdown list lines.
    """
    return "\n".join(
        f"- `{cls.__name__}`: {', '.join(f'`{m.name}`' for m in cls)}" for cls in enums
    )


def stage_fields() -> str:
    """Return the fields of ``StageExecution`` with their defaults, one line each.

    Returns:
        Markdown list lines; private fields are left out.
    """
    lines = []
    for f in dataclasses.fields(StageExecution):
        if f.name.startswith("_"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory
        shown = format_default(default) if f.default is not dataclasses.MISSING else "..."
        if f.default_factory is not dataclasses.MISSING:
            made = f.default_factory()
            shown = "new id" if isinstance(made, str) else repr(made)
        lines.append(f"`{f.name}`={shown}")
    return ", ".join(lines)


def tasks_section() -> str:
    """Return the built-in tasks: type name, class, context keys (defaults) and outputs.

    Returns:
        Markdown, generated from :data:`stabilize.tasks._declared.BUILTIN_TASK_KEYS`; a
        default of ``false`` (a flag) is not shown.
    """
    exported = set(stabilize.__all__)
    out = []
    for keys in BUILTIN_TASK_KEYS:
        module, _, cls = keys.cls.partition(":")
        context = ", ".join(
            f"`{k.name}`" + (f" ({k.default})" if k.default not in ("", "false") else "")
            for k in keys.context
        )
        outputs = ", ".join(f"`{o}`" for o in keys.outputs) or "none"
        where = "" if cls in exported else f" (`{module}`)"
        out.append(
            f"- **`{keys.task}`** — `{cls}`{where}. Context: {context or 'none'}. "
            f"Outputs: {outputs}."
        )
    return "\n".join(out)


def reducer_names() -> str:
    """Return the built-in reducer names, comma-separated in backticks.

    Returns:
        E.g. ``"`append`, `collect`, ..."``.
    """
    return ", ".join(f"`{name}`" for name in sorted(reducers._BUILTINS))
