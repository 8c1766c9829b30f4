"""Name-to-task lookup: explicit registration first, built-ins second, plugins last."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from stabilize._plugins import load_task
from stabilize.errors import TaskNotFoundError
from stabilize.tasks.interface import CallableTask, NoOpTask, SignalWaitTask, Task, WaitTask

TaskSource = type[Task] | Task | Callable[..., Any]
T = TypeVar("T", bound=TaskSource)


def _builtins() -> dict[str, type[Task]]:
    from stabilize.loops import LoopTask
    from stabilize.tasks.docker import DockerTask
    from stabilize.tasks.http import HTTPTask
    from stabilize.tasks.python_task import PythonTask
    from stabilize.tasks.shell import ShellTask
    from stabilize.tasks.ssh import SSHTask
    from stabilize.tasks.sub_workflow import SubWorkflowTask

    return {
        "shell": ShellTask,
        "http": HTTPTask,
        "python": PythonTask,
        "docker": DockerTask,
        "ssh": SSHTask,
        "noop": NoOpTask,
        "wait": WaitTask,
        "wait_for_signal": SignalWaitTask,
        "loop": LoopTask,
        "sub_workflow": SubWorkflowTask,
        "SubWorkflowTask": SubWorkflowTask,
    }


class TaskRegistry:
    """Maps the ``implementing_class`` names of tasks to task objects.

    ``register`` accepts a :class:`Task` subclass (a fresh instance per lookup), an
    instance (shared by every lookup) or a plain callable (wrapped in a
    :class:`~stabilize.tasks.interface.CallableTask`). Names not registered fall back to
    the built-ins (``noop``, ``wait``...) and then to the ``stabilize.tasks`` plugin group.
    ``TaskRegistry(builtins=False)`` offers no built-in (not even ``shell`` or ``python``),
    ``builtins={"noop", "http"}`` only those; plugins stay unless ``plugins=False``.

    Args:
        builtins: ``True`` for every built-in task, ``False`` for none, or the names of
            the built-ins to offer.
        plugins: Whether a name found nowhere else is looked up in the plugin group.

    Raises:
        ValueError: ``builtins`` names something that is not a built-in task.
        TypeError: ``builtins`` is a single string rather than a collection of names.
    """

    def __init__(self, builtins: bool | Iterable[str] = True, *, plugins: bool = True) -> None:
        self._entries: dict[str, TaskSource] = {}
        self._wrapped: dict[str, Task] = {}
        self._offered = _offered_builtins(builtins)
        self._plugins = plugins

    def register(
        self,
        name: str | type[Task],
        task: TaskSource | None = None,
        aliases: Iterable[str] | None = None,
        strict: bool = False,
    ) -> None:
        """Register ``task`` under ``name`` (and each alias).

        ``register(MyTask)`` registers a class under its own name. Registering a name twice
        replaces the first with a warning, or raises ``ValueError`` when ``strict``.

        Args:
            name: The name stages use as ``implementing_class``, or a Task class to
                register under its own name (then ``task`` is omitted).
            task: A Task subclass, a Task instance or a callable ``(stage) -> result``.
            aliases: Further names for the same task.
            strict: Refuse a name already registered instead of replacing it.

        Raises:
            TypeError: ``task`` is neither a Task class, a Task instance nor a callable.
            ValueError: ``name`` is empty, or already taken while ``strict``.
        """
        if task is None:
            if not (isinstance(name, type) and issubclass(name, Task)):
                raise TypeError("register(name, task): task is required unless name is a class")
            task, name = name, name.__name__
        if not isinstance(name, str) or not name:
            raise ValueError("task name must be a non-empty string")
        _check_task_source(name, task)
        names = [name, *(aliases or ()), *_declared_aliases(task)]
        for key in names:
            if key in self._entries and self._entries[key] is not task:
                if strict:
                    raise ValueError(f"task {key!r} is already registered")
                warnings.warn(
                    f"task {key!r} re-registered; the new one replaces the old", stacklevel=2
                )
            self._entries[key] = task
            self._wrapped.pop(key, None)

    def register_class(self, task_class: type[Task], aliases: Iterable[str] | None = None) -> None:
        """Register a task class under its class name.

        Args:
            task_class: A :class:`Task` subclass.
            aliases: Further names for it.

        Raises:
            TypeError: ``task_class`` is not a Task class.
        """
        self.register(task_class.__name__, task_class, aliases=aliases)

    def task(self, name: str, aliases: Iterable[str] | None = None) -> Callable[[T], T]:
        """Decorator form of :meth:`register`.

        Args:
            name: The name to register under.
            aliases: Further names for it.

        Returns:
            A decorator that registers the function or class and returns it unchanged
            (it raises what :meth:`register` raises).
        """

        def decorate(source: T) -> T:
            self.register(name, source, aliases=aliases)
            return source

        return decorate

    def get(self, name: str) -> Task:
        """Return a task for ``name``.

        Args:
            name: A registered name, a built-in's (``noop``, ``wait``...) or a plugin's.

        Returns:
            The task: a fresh instance for a registered class, the shared instance or
            function wrapper otherwise.

        Raises:
            TaskNotFoundError: nothing is registered, built in or offered by a plugin.
        """
        wrapped = self._wrapped.get(name)
        if wrapped is not None:
            return wrapped
        source = self._resolve(name)
        if source is None:
            known = ", ".join(sorted(self.names())) or "none"
            raise TaskNotFoundError(f"no task registered as {name!r} (registered: {known})")
        task = _instantiate(name, source)
        if isinstance(task, CallableTask) and task.fn is source:
            self._wrapped[name] = task  # a function's wrapper is stateless: build it once
        return task

    def get_by_class(self, task_class: type[Task]) -> Task:
        """Return a task registered as (or as an instance of) ``task_class``.

        Args:
            task_class: The class to look for (built-ins and plugins are not searched).

        Returns:
            A fresh instance of it, or the registered instance.

        Raises:
            TaskNotFoundError: No registered task is of this class.
        """
        for source in self._entries.values():
            if source is task_class or isinstance(source, task_class):
                return _instantiate(task_class.__name__, source)
        raise TaskNotFoundError(f"no task of class {task_class.__name__} is registered")

    def has(self, name: str) -> bool:
        """True when :meth:`get` would find a task for ``name``.

        Args:
            name: The name to look up (a plugin offering it is loaded).

        Returns:
            Whether a task is registered, built in or offered by a plugin under it.
        """
        return self._resolve(name) is not None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.has(name)

    def names(self) -> list[str]:
        """The explicitly registered names and the built-ins this registry offers.

        Returns:
            The names, sorted (plugins' names are not listed).
        """
        return sorted({*self._entries, *self._builtins()})

    def _builtins(self) -> dict[str, type[Task]]:
        every = _builtins()
        if self._offered is None:
            return every
        return {name: every[name] for name in self._offered}

    def _resolve(self, name: str) -> TaskSource | None:
        source = self._entries.get(name)
        if source is not None:
            return source
        builtin = self._builtins().get(name)
        if builtin is not None:
            return builtin
        if not self._plugins:
            return None
        plugin = load_task(name)
        if plugin is not None:
            _check_task_source(name, plugin)
            self._entries[name] = plugin
        return plugin


def _offered_builtins(builtins: bool | Iterable[str]) -> frozenset[str] | None:
    """The built-in names a registry offers; None for all of them."""
    if isinstance(builtins, bool):
        return None if builtins else frozenset()
    if isinstance(builtins, str):
        # A lone name would be read as its letters.
        raise TypeError(f"builtins must be a bool or a collection of names, not {builtins!r}")
    offered = frozenset(builtins)
    unknown = sorted(offered - set(_builtins()))
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise ValueError(
            f"not built-in tasks: {listed} (built-ins: {', '.join(sorted(_builtins()))})"
        )
    return offered


def _declared_aliases(task: TaskSource) -> list[str]:
    if isinstance(task, Task):
        return list(task.aliases)
    if isinstance(task, type) and issubclass(task, Task):
        declared = task.__dict__.get("aliases")
        if isinstance(declared, list | tuple):
            return [str(a) for a in declared]
    return []


def _check_task_source(name: str, task: object) -> None:
    if isinstance(task, Task):
        return
    if isinstance(task, type):
        if issubclass(task, Task):
            return
        raise TypeError(f"task {name!r}: class {task.__name__} does not subclass stabilize.Task")
    if not callable(task):
        raise TypeError(f"task {name!r}: expected a Task class, instance or callable")


def _instantiate(name: str, source: TaskSource) -> Task:
    if isinstance(source, Task):
        return source
    if isinstance(source, type) and issubclass(source, Task):
        return source()
    if isinstance(source, type):  # pragma: no cover - refused by register
        raise TypeError(f"task {name!r} is not a Task")
    # A zero-argument factory (as plugins provide) or a function of the stage.
    params = _positional_params(source)
    if params == 0:
        made = source()
        if isinstance(made, Task):
            return made
        raise TypeError(f"task factory {name!r} returned {type(made).__name__}, not a Task")
    return CallableTask(source, name)


def _positional_params(fn: Callable[..., Any]) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    return sum(
        1
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )
