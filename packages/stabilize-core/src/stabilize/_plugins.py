"""Entry-point discovery: the one place stabilize reads plugin metadata.

Extensions contribute through three ``importlib.metadata`` entry-point groups:

* ``stabilize.exports``: names ``stabilize.__getattr__`` re-exports lazily (``ApprovalTask``).
* ``stabilize.tasks``: task types a :class:`~stabilize.tasks.TaskRegistry` finds on a miss.
* ``stabilize.cli``: subcommands of the ``stabilize`` script (``pkg.cli:main(argv) -> int``).

Reading a group imports nothing: an entry point is loaded only when its name is used, so
``import stabilize`` and ``stabilize --help`` stay cheap whatever is installed. Setting
``STABILIZE_DISABLE_PLUGIN_AUTOLOAD=1`` hides every plugin (each group reads as empty).
"""

from __future__ import annotations

import functools
import os
from importlib import metadata
from typing import Any

from stabilize.errors import StabilizeError

EXPORTS_GROUP = "stabilize.exports"
TASKS_GROUP = "stabilize.tasks"
CLI_GROUP = "stabilize.cli"

DISABLE_AUTOLOAD_ENV = "STABILIZE_DISABLE_PLUGIN_AUTOLOAD"

OPTIONAL_EXPORTS: dict[str, str] = {
    "ApprovalTask": "stabilize-hitl",
    "approve": "stabilize-hitl",
    "reject": "stabilize-hitl",
    "send_signal": "stabilize-hitl",
    "get_signal": "stabilize-hitl",
    "WorkflowStream": "stabilize-stream",
    "StreamItem": "stabilize-stream",
    "LLMClient": "stabilize-llm",
    "LLMTask": "stabilize-llm",
    "AgentLoopTask": "stabilize-llm",
    "ToolRegistry": "stabilize-llm",
    "tool": "stabilize-llm",
    "ToolError": "stabilize-llm",
}
"""Public names that extensions provide, mapped to the distribution to install for each."""

_SPANS_BY_THE_ENGINE = (
    "the worker records workflow, stage and task spans itself once configure_tracing() "
    "is called; for spans of your own use trace_operation() (docs/compatibility.md, Tracing)"
)

REPLACED_NAMES: dict[str, str] = {
    "trace_workflow": _SPANS_BY_THE_ENGINE,
    "trace_stage": _SPANS_BY_THE_ENGINE,
    "trace_task": _SPANS_BY_THE_ENGINE,
    "trace_message_processing": _SPANS_BY_THE_ENGINE,
}
"""Names of the original package left out on purpose, mapped to what to use instead."""


class RemovedNameError(StabilizeError, ImportError):
    """A name of the original package that stabilize leaves out on purpose.

    Its message says what to use instead; it is an ImportError so that ``from stabilize
    import name`` shows that text.
    """


# The import package each extension distribution ships: the `name` of the hint's error.
_DIST_MODULES = {
    "stabilize-hitl": "stabilize.hitl",
    "stabilize-stream": "stabilize.streaming",
    "stabilize-llm": "stabilize.llm",
}


class PluginConflictError(StabilizeError, ImportError):
    """Two distributions claim one entry name in one group, and that name was used.

    Attributes:
        group: The entry-point group, e.g. ``stabilize.exports``.
        entry_name: The name both distributions claim.
        claims: Every entry point claiming the name.
    """

    def __init__(
        self, group: str, entry_name: str, claims: tuple[metadata.EntryPoint, ...]
    ) -> None:
        owners = ", ".join(f"{describe_dist(ep)} ({ep.value})" for ep in claims)
        super().__init__(
            f"{len(claims)} distributions claim {entry_name!r} in entry-point group {group!r}: "
            f"{owners}; uninstall all but one of them"
        )
        self.group = group
        self.entry_name = entry_name
        self.claims = claims


class _ConflictingEntryPoint(metadata.EntryPoint):
    """Stands in for an entry name several distributions claim; loading it raises.

    Keeping the conflict inside the group (rather than raising while scanning) means an
    unrelated clash never breaks ``import stabilize``: only code that uses the name fails.
    """

    claims: tuple[metadata.EntryPoint, ...]

    def __init__(self, claims: tuple[metadata.EntryPoint, ...]) -> None:
        first = claims[0]
        super().__init__(first.name, first.value, first.group)
        vars(self)["claims"] = claims  # EntryPoint forbids setattr

    def load(self) -> Any:
        raise PluginConflictError(self.group, self.name, self.claims)


def autoload_disabled() -> bool:
    """Report whether ``STABILIZE_DISABLE_PLUGIN_AUTOLOAD`` hides all plugins.

    Returns:
        True when the variable is set to ``1``, ``true``, ``yes`` or ``on``.
    """
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@functools.cache
def group(name: str) -> dict[str, metadata.EntryPoint]:
    """Return the entry points of one group by entry name, without importing any of them.

    The result is cached: every ``importlib.metadata.entry_points()`` call rescans all
    installed distributions. Tests call ``group.cache_clear()`` after changing them.

    An entry name claimed by two distributions maps to an entry point whose ``load()``
    raises :class:`PluginConflictError` naming both; the clash surfaces only when the
    name is used.

    Args:
        name: The group, e.g. ``"stabilize.cli"``.

    Returns:
        Entry name to entry point; empty when plugin autoload is disabled.
    """
    if autoload_disabled():
        return {}
    # A dict built straight from entry_points() silently keeps the last claim of a name,
    # so gather every claim first.
    claims: dict[str, list[metadata.EntryPoint]] = {}
    for ep in metadata.entry_points(group=name):
        same = claims.setdefault(ep.name, [])
        if not any(_same_claim(ep, seen) for seen in same):
            same.append(ep)
    found: dict[str, metadata.EntryPoint] = {}
    for entry_name, eps in claims.items():
        if len(eps) == 1:
            found[entry_name] = eps[0]
        else:
            found[entry_name] = _ConflictingEntryPoint(tuple(eps))
    return found


def load_entry_point(ep: metadata.EntryPoint) -> Any:
    """Load one entry point, naming the plugin when it fails.

    Args:
        ep: An entry point from :func:`group`.

    Returns:
        The object the entry point names.

    Raises:
        PluginConflictError: Two distributions claim the entry's name.
        ImportError: The plugin failed to import; the message names the group, the entry
            and the distribution, and the original error is chained.
    """
    try:
        return ep.load()
    except PluginConflictError:
        raise
    except Exception as exc:
        module = ep.value.partition(":")[0].strip()
        raise ImportError(
            f"plugin {ep.name!r} (entry-point group {ep.group!r}, from {describe_dist(ep)}) "
            f"failed to load {ep.value!r}: {type(exc).__name__}: {exc}",
            name=module,
        ) from exc


def export_names() -> list[str]:
    """Return the names the ``stabilize.exports`` group offers, sorted.

    Returns:
        The lazily exported names; loading none of them.
    """
    return sorted(group(EXPORTS_GROUP))


def load_export(name: str) -> Any:
    """Load a name an extension exports, for ``stabilize.__getattr__``.

    Args:
        name: The attribute looked up on ``stabilize``.

    Returns:
        The exported object.

    Raises:
        ModuleNotFoundError: ``name`` belongs to an extension that is not installed; the
            message says what to install. (An ``AttributeError`` raised by a module's
            ``__getattr__`` loses its text in ``from stabilize import name``.)
        RemovedNameError: ``name`` is one of the original package's names left out on
            purpose (:data:`REPLACED_NAMES`); the message says what to use instead.
        AttributeError: No extension exports ``name``.
        ImportError: The extension failed to import, or two distributions export ``name``.
    """
    # Dunder probes (copy, pickle, inspect) are never exports; answer without a scan.
    ep = None if name.startswith("__") else group(EXPORTS_GROUP).get(name)
    if ep is not None:
        return load_entry_point(ep)
    replacement = REPLACED_NAMES.get(name)
    if replacement is not None:
        raise RemovedNameError(f"stabilize.{name} does not exist here: {replacement}", name=name)
    dist = OPTIONAL_EXPORTS.get(name)
    if dist is not None:
        hint = f"stabilize.{name} needs {dist}: pip install {dist}"
        if autoload_disabled():
            hint += f" (or unset {DISABLE_AUTOLOAD_ENV}, which hides installed plugins)"
        raise ModuleNotFoundError(hint, name=_DIST_MODULES.get(dist))
    raise AttributeError(f"module 'stabilize' has no attribute {name!r}", name=name)


def load_task(name: str) -> Any | None:
    """Load a task type from the ``stabilize.tasks`` group.

    ``TaskRegistry`` calls this only on a miss, after explicit registrations and built-ins,
    so a plugin can never replace either.

    Args:
        name: The task type (``implementing_class``) looked up.

    Returns:
        A Task class or zero-argument factory, or None when no plugin offers ``name``.

    Raises:
        ImportError: The plugin failed to import, or two distributions offer ``name``.
    """
    ep = group(TASKS_GROUP).get(name)
    return None if ep is None else load_entry_point(ep)


def cli_commands() -> dict[str, metadata.EntryPoint]:
    """Return the ``stabilize`` subcommands plugins provide, without loading them.

    Returns:
        Command name to entry point; each loads ``main(argv: list[str]) -> int``.
    """
    return group(CLI_GROUP)


def describe_dist(ep: metadata.EntryPoint) -> str:
    """Name the distribution that provides an entry point, for messages and ``--help``.

    Args:
        ep: An entry point, e.g. from :func:`group`.

    Returns:
        ``"<name> <version>"``; for a name several distributions claim, all of them
        joined by ``" and "``; ``"an unknown distribution"`` for a hand-built entry point.
    """
    if isinstance(ep, _ConflictingEntryPoint):
        return " and ".join(describe_dist(claim) for claim in ep.claims)
    dist = ep.dist
    if dist is None:
        return "an unknown distribution"
    return f"{dist.name} {dist.version}"


def _same_claim(a: metadata.EntryPoint, b: metadata.EntryPoint) -> bool:
    # One distribution reachable twice (e.g. on sys.path twice) is not a conflict.
    dist_a = a.dist.name if a.dist is not None else None
    dist_b = b.dist.name if b.dist is not None else None
    return a.value == b.value and dist_a == dist_b
