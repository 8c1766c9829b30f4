"""The workflow store: save, load, list and search workflows."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from stabilize._json import ENCODING_ERRORS
from stabilize.backends._base import Backend, Transaction
from stabilize.backends._rows import check_workflow_json
from stabilize.errors import StabilizeError, UnknownTaskTypeError, WorkflowValidationError
from stabilize.models.graph import validate_graph
from stabilize.models.status import WorkflowStatus
from stabilize.models.workflow import Workflow
from stabilize.reducers import has_reducer


class WorkflowNotFoundError(StabilizeError, KeyError):
    """No workflow has the requested id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "workflow not found"


def validate_for_submit(backend: Backend, workflow: Workflow) -> None:
    """Refuse a workflow that cannot run, before anything is written.

    Checks the graph, the reducers its stages name, and that every task type is known to
    the registries of the processors attached to this database in this process (when
    there are any). That every context is JSON is checked as the rows are encoded, by
    :func:`insert_new_workflow`: encoding them twice cost a tenth of a submission.

    Raises:
        WorkflowValidationError: naming the stage at fault.
    """
    validate_graph(workflow.stages)
    for stage in workflow.stages:
        for key, name in stage.output_reducers.items():
            if not has_reducer(name):
                raise WorkflowValidationError(
                    f"stage {stage.ref_id!r}: output_reducers[{key!r}] names unknown reducer "
                    f"{name!r}; register it with register_reducer() first",
                    ref_id=stage.ref_id,
                )
    registries = list(backend.registries)
    if not registries:
        return
    for stage in workflow.stages:
        for task in stage.tasks:
            name = task.implementing_class
            if not any(registry.has(name) for registry in registries):
                raise UnknownTaskTypeError(
                    f"stage {stage.ref_id!r}: task {task.name!r} uses implementing_class "
                    f"{name!r}, which no TaskRegistry knows; register it first",
                    ref_id=stage.ref_id,
                )


def insert_new_workflow(tx: Transaction, workflow: Workflow, now: int) -> None:
    """Insert ``workflow`` (validated by :func:`validate_for_submit`) in ``tx``.

    Raises:
        ContextSerializationError: a context, output, trigger or workflow context is not
            JSON, naming the stage and key (the transaction then writes nothing).
    """
    try:
        tx.insert_workflow(workflow, now)
    except ENCODING_ERRORS:
        check_workflow_json(workflow)  # says which value, and where
        raise


class WorkflowStore:
    """Durable workflow state on a backend (use :class:`SqliteWorkflowStore` and friends).

    Args:
        backend: The database backend the state lives in.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def store(self, workflow: Workflow) -> None:
        """Save a new workflow with its stages.

        Args:
            workflow: The workflow to save, with its stages and tasks.

        Raises:
            WorkflowValidationError: the workflow is invalid (nothing is written).
            ValueError: a workflow with this id is already stored.
        """
        validate_for_submit(self.backend, workflow)
        now = int(time.time() * 1000)
        with self.backend.transaction() as tx:
            if tx.workflow(workflow.id) is not None:
                raise ValueError(f"workflow {workflow.id} is already stored")
            insert_new_workflow(tx, workflow, now)

    def retrieve(self, workflow_id: str) -> Workflow:
        """Load a workflow with all its stages and tasks (a fresh copy).

        Args:
            workflow_id: The workflow's id.

        Returns:
            The workflow as stored now.

        Raises:
            WorkflowNotFoundError: no workflow has this id.
        """
        with self.backend.read() as tx:
            workflow = tx.read_workflow(workflow_id)
        if workflow is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return workflow

    def exists(self, workflow_id: str) -> bool:
        """True when a workflow with this id is stored.

        Args:
            workflow_id: The workflow's id.

        Returns:
            Whether it is stored.
        """
        with self.backend.read() as tx:
            tx.cur.execute(tx.q["workflow_exists"], (workflow_id,))
            return tx.cur.fetchone() is not None

    def list_workflows(
        self,
        application: str | None = None,
        status: WorkflowStatus | str | Iterable[WorkflowStatus | str] | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Workflow]:
        """List workflows, newest first, filtered by application, status and name.

        Args:
            application: Only this application's workflows.
            status: One status or several.
            name: Only workflows whose name contains this text (in any case).
            limit: At most this many.
            offset: Skip this many first.

        Returns:
            The workflows found, newest first.

        Raises:
            ValueError: A status is not a `WorkflowStatus` name.
        """
        ids = self._search_ids(application, status, name, limit, offset)
        with self.backend.read() as tx:
            found = [tx.read_workflow(i) for i in ids]
        return [wf for wf in found if wf is not None]

    def retrieve_by_application(self, application: str, limit: int = 100) -> list[Workflow]:
        """The newest workflows of one application.

        Args:
            application: The application's name.
            limit: At most this many.

        Returns:
            The workflows found, newest first.
        """
        return self.list_workflows(application=application, limit=limit)

    def search(self, **filters: Any) -> list[Workflow]:
        """Same as :meth:`list_workflows` (kept as the searching verb).

        Args:
            **filters: The keyword arguments of :meth:`list_workflows`.

        Returns:
            The workflows found, newest first.

        Raises:
            ValueError: A status is not a `WorkflowStatus` name.
        """
        return self.list_workflows(**filters)

    def count(
        self,
        application: str | None = None,
        status: WorkflowStatus | str | Iterable[WorkflowStatus | str] | None = None,
    ) -> int:
        """Count workflows by application and status.

        Args:
            application: Only this application's workflows.
            status: One status or several.

        Returns:
            How many stored workflows match.

        Raises:
            ValueError: A status is not a `WorkflowStatus` name.
        """
        where, params = workflow_filters(self.backend.placeholder, application, status, None)
        rows = self._query(f"SELECT count(*) FROM workflows{where}", params)
        return int(rows[0][0])

    def delete(self, workflow_id: str) -> None:
        """Delete a workflow with its stages, queued messages, mutex waits and events.

        Events go from this database's own ``events`` table (not from an event log kept
        in another database). Deleting an id that is not stored does nothing.

        Args:
            workflow_id: The workflow's id.
        """
        with self.backend.transaction() as tx:
            _delete_workflows(tx, [workflow_id], keep_events=False)

    def purge(
        self,
        older_than: timedelta,
        *,
        keep_events: bool = False,
        batch_size: int = 500,
        application: str | None = None,
        now: float | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete completed workflows that ended more than ``older_than`` ago.

        Only workflows in a final status (SUCCEEDED, TERMINAL, CANCELED, STOPPED...) are
        touched; running, paused and suspended ones never are. Each batch is one short
        transaction (on PostgreSQL rows other transactions hold are skipped, not waited
        for), so workers keep running while a purge goes on.

        Args:
            older_than: How long ago a workflow must have last changed (ended).
            keep_events: Keep the workflows' rows in this database's ``events`` table.
            batch_size: Workflows deleted per transaction.
            application: Only this application's workflows.
            now: The current time in epoch seconds (default: the clock).
            dry_run: Count what would be deleted, delete nothing.

        Returns:
            How many workflows were deleted (or would be, with ``dry_run``).

        Raises:
            ValueError: ``older_than`` is negative or ``batch_size`` is below 1.
        """
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        current = time.time() if now is None else now
        cutoff = int((current - older_than.total_seconds()) * 1000)
        where, params = _purge_filter(self.backend.placeholder, cutoff, application)
        if dry_run:
            return int(self._query(f"SELECT count(*) FROM workflows{where}", params)[0][0])
        deleted = 0
        while True:
            with self.backend.transaction() as tx:
                tx.cur.execute(tx.q["purge_batch"].replace("{where}", where), (*params, batch_size))
                ids = [row[0] for row in tx.cur.fetchall()]
                if ids:
                    _delete_workflows(tx, ids, keep_events=keep_events)
            deleted += len(ids)
            if len(ids) < batch_size:
                return deleted

    def stage_outputs(self, workflow_id: str) -> dict[str, dict[str, Any]]:
        """The outputs of every stage of a workflow, by ``ref_id``.

        Args:
            workflow_id: The workflow's id.

        Returns:
            Each stage's outputs, keyed by its ``ref_id``.

        Raises:
            WorkflowNotFoundError: No workflow has this id.
        """
        return {s.ref_id: s.outputs for s in self.retrieve(workflow_id).stages}

    def _search_ids(
        self,
        application: str | None,
        status: WorkflowStatus | str | Iterable[WorkflowStatus | str] | None,
        name: str | None,
        limit: int,
        offset: int,
    ) -> list[str]:
        p = self.backend.placeholder
        where, params = workflow_filters(p, application, status, name)
        order = "ORDER BY created_at DESC, id DESC"
        sql = f"SELECT id FROM workflows{where} {order} LIMIT {p} OFFSET {p}"
        return [r[0] for r in self._query(sql, (*params, limit, offset))]

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self.backend.read() as tx:
            tx.cur.execute(sql, params)
            return list(tx.cur.fetchall())


def _delete_workflows(tx: Transaction, ids: list[str], *, keep_events: bool) -> None:
    """Delete workflows (stages cascade), their messages and mutex waits.

    Unless ``keep_events``, their rows in this database's own ``events`` table go too;
    the process's cache forgets them at once (:meth:`Transaction.forget`).
    """
    tx.forget(ids)
    rows = [(workflow_id,) for workflow_id in ids]
    tx.cur.executemany(tx.q["drop_workflow_messages"], rows)
    tx.cur.executemany(tx.q["drop_workflow_mutex_waiters"], rows)
    if not keep_events:
        tx.cur.execute(tx.q["events_table_exists"])
        if tx.cur.fetchone() is not None:
            tx.cur.executemany(tx.q["delete_workflow_events"], rows)
    tx.cur.executemany(tx.q["delete_workflow"], rows)


_FINAL_STATUSES = tuple(s.value for s in WorkflowStatus if s.is_complete)


def _purge_filter(p: str, cutoff_ms: int, application: str | None) -> tuple[str, tuple[Any, ...]]:
    where = f" WHERE status IN ({', '.join(p for _ in _FINAL_STATUSES)}) AND updated_at < {p}"
    params: list[Any] = [*_FINAL_STATUSES, cutoff_ms]
    if application is not None:
        where += f" AND application = {p}"
        params.append(application)
    return where, tuple(params)


def workflow_filters(
    p: str,
    application: str | None,
    status: WorkflowStatus | str | Iterable[WorkflowStatus | str] | None,
    name: str | None,
    created_since: int | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` clause (and its parameters) that selects workflows by these filters.

    ``name`` matches any part of the name, ignoring case on every database (``p`` is the
    backend's placeholder).
    """
    clauses: list[str] = []
    params: list[Any] = []
    if application is not None:
        clauses.append(f"application = {p}")
        params.append(application)
    if status is not None:
        statuses = [status] if isinstance(status, str | WorkflowStatus) else list(status)
        values = [WorkflowStatus(s).value for s in statuses]
        clauses.append(f"status IN ({', '.join(p for _ in values)})")
        params.extend(values)
    if name is not None:
        # lower() on both sides: PostgreSQL's LIKE is case-sensitive, SQLite's is not.
        clauses.append(f"lower(name) LIKE lower({p}) ESCAPE '!'")
        escaped = name.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        params.append(f"%{escaped}%")
    if created_since is not None:
        clauses.append(f"created_at >= {p}")
        params.append(created_since)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return where, tuple(params)


def __getattr__(name: str) -> Any:
    # The dialects' stores used to be defined here; loaded on first use, so that importing
    # this module loads no dialect.
    if name == "SqliteWorkflowStore":
        from stabilize.backends.sqlite import SqliteWorkflowStore

        return SqliteWorkflowStore
    if name == "PostgresWorkflowStore":
        from stabilize.backends.postgres import PostgresWorkflowStore

        return PostgresWorkflowStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
