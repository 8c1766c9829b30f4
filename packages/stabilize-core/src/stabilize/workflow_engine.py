"""One object for the common case: a database, its tasks, and a worker that runs them.

Named ``WorkflowEngine`` rather than ``Engine``: ``stabilize.engine`` is the subpackage of
pure transitions, and ``stabilize.Engine`` next to it would read as the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, overload

from stabilize.backends._base import Backend
from stabilize.connect import open_database
from stabilize.models.workflow import Workflow
from stabilize.orchestrator import Orchestrator
from stabilize.persistence.store import WorkflowStore
from stabilize.queue.processor._processor import QueueProcessor
from stabilize.queue.processor._result import ProcessResult
from stabilize.queue.processor.config import QueueProcessorConfig
from stabilize.queue.queue import Queue
from stabilize.tasks.registry import TaskRegistry, TaskSource

T = TypeVar("T", bound=TaskSource)


class WorkflowEngine:
    """A workflow store, its queue, a task registry, a processor and an orchestrator.

    Opened from a database URL; ``run`` starts a workflow and works on it until it ends::

        with WorkflowEngine("sqlite:///hello.db") as engine:
            engine.register("greet", greet)
            stages = [StageExecution.for_task("greet", "greet")]
            workflow = engine.run(Workflow.create("demo", "hello", stages))

    The parts stay available for everything else (``engine.store``, ``engine.queue``,
    ``engine.registry``, ``engine.processor``, ``engine.orchestrator``): ``approve(
    engine.queue, ...)``, ``engine.orchestrator.cancel(...)``, ``engine.processor.start()``
    for a worker that runs in the background.

    Args:
        url: ``sqlite:///path/to/file.db`` (or a plain path) or ``postgresql://...``.
        schema: The PostgreSQL schema (``None``: the connection's default).
        registry: The task registry to use (default: a new, empty one).
        config: Processor settings (default: :class:`QueueProcessorConfig`).
        create: Create the database or migrate it as needed (the default); False opens an
            existing database at the current version only and changes nothing otherwise.

    Raises:
        DatabaseNotFoundError: the SQLite file's directory does not exist, or (without
            ``create``) there is no stabilize database.
        SchemaVersionError: the database was written by a newer stabilize.
        ConnectionError: the PostgreSQL server cannot be reached (naming host and port).
        ValueError: the URL is not understood, or a schema was given for SQLite.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        registry: TaskRegistry | None = None,
        config: QueueProcessorConfig | None = None,
        create: bool = True,
    ) -> None:
        already_open = Backend.open_backends()
        store, queue = open_database(url, schema, create=create)
        self.store: WorkflowStore = store
        self.queue: Queue = queue
        # Connections this engine opened are its to close; ones a store or queue of the
        # caller already held are shared (one backend per database and process).
        self._owns_backend = not any(b is store.backend for b in already_open)
        self.registry = registry if registry is not None else TaskRegistry()
        self.processor = QueueProcessor(
            queue, config=config, store=store, task_registry=self.registry
        )
        self.orchestrator = Orchestrator(queue, store=store)
        self._closed = False

    @property
    def backend(self) -> Backend:
        """The database the parts share."""
        return self.store.backend

    def register(
        self,
        name: str | type[Any],
        task: TaskSource | None = None,
        aliases: Iterable[str] | None = None,
        strict: bool = False,
    ) -> None:
        """Register a task: the same as :meth:`TaskRegistry.register` on :attr:`registry`.

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
        self.registry.register(name, task, aliases=aliases, strict=strict)

    @overload
    def task(self, name: T, /) -> T: ...

    @overload
    def task(
        self, name: str | None = None, /, *, aliases: Iterable[str] | None = None
    ) -> Callable[[T], T]: ...

    def task(
        self, name: Any = None, /, *, aliases: Iterable[str] | None = None
    ) -> Callable[[T], T] | Any:
        """Register the decorated function or Task class, and return it unchanged.

        ``@engine.task("greet")`` registers it as ``greet``; plain ``@engine.task`` uses
        the function's (or class's) own name.

        Args:
            name: The name to register under, or (used bare) the function or class.
            aliases: Further names for it.

        Returns:
            The function or class itself when used bare; else a decorator returning it
            unchanged.

        Raises:
            TypeError: What is decorated is neither a Task class nor a callable.
            ValueError: The name is empty.
        """
        if name is not None and not isinstance(name, str):
            source = name
            self.registry.register(str(source.__name__), source)
            return source

        def decorate(source: T) -> T:
            key = name if name is not None else str(getattr(source, "__name__", ""))
            self.registry.register(key, source, aliases=aliases)
            return source

        return decorate

    def start(self, workflow: Workflow) -> None:
        """Store the workflow and queue its start; do not wait (see :meth:`run`).

        A worker runs it: :meth:`process` here, ``engine.processor.start()`` in the
        background, or another process on the same database.

        Args:
            workflow: The workflow to start; starting one already started does nothing.

        Raises:
            WorkflowValidationError: the workflow cannot run (nothing is written).
        """
        self.orchestrator.start(workflow)

    def process(self, timeout: float = 60.0) -> ProcessResult:
        """Work on every workflow of the database until nothing is left or ``timeout``.

        The same as ``engine.processor.process_all(timeout)``.

        Args:
            timeout: The most seconds to work.

        Returns:
            The number of messages processed, with ``finished`` and ``timed_out``
            saying what was left (see :class:`ProcessResult`).

        Raises:
            RuntimeError: The processor is running in the background (``start()``).
        """
        return self.processor.process_all(timeout=timeout)

    def run(self, workflow: Workflow, timeout: float = 60.0) -> Workflow:
        """Start ``workflow`` and work until it ends; return it as stored.

        It also returns when nothing more can happen within ``timeout`` seconds: a stage
        waits for a signal or an approval, or the next step is due later (a wait, a
        retry's backoff). Check ``status``: ``SUCCEEDED``, or ``TERMINAL`` with the reason
        in :meth:`Workflow.failure_summary`, or still ``RUNNING`` when it waits.

        Args:
            workflow: The workflow to run.
            timeout: The most seconds to work on it.

        Returns:
            The workflow as stored when the work stopped.

        Raises:
            WorkflowValidationError: the workflow cannot run (nothing is written).
            TimeoutError: ``timeout`` ran out while the workflow still had work ready
                (call :meth:`process` to go on, or pass a larger timeout).
        """
        self.start(workflow)
        result = self.process(timeout)
        stored = self.store.retrieve(workflow.id)
        if result.timed_out and not stored.status.is_complete:
            raise TimeoutError(
                f"workflow {workflow.id} ({workflow.name!r}) is still {stored.status.value} "
                f"after {timeout:g}s: {result.pending} message(s) queued, {result.running} "
                "task(s) running; call process() to go on or pass a larger timeout"
            )
        return stored

    def retrieve(self, workflow_id: str) -> Workflow:
        """Load a workflow as stored (the same as ``engine.store.retrieve``).

        Args:
            workflow_id: The workflow's id.

        Returns:
            A fresh copy of the workflow with its stages and tasks.

        Raises:
            WorkflowNotFoundError: No workflow has this id.
        """
        return self.store.retrieve(workflow_id)

    def close(self) -> None:
        """Stop the processor (running tasks finish first) and close the connections.

        Connections a store or queue of this process had opened before the engine are
        shared with it and stay open. Closing twice does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self.processor.stop()
        self.backend.registries.discard(self.registry)
        if self._owns_backend:
            self.backend.close()

    def __enter__(self) -> WorkflowEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WorkflowEngine({self.backend.location!r})"
