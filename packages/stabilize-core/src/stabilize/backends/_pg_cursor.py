"""The pipelined cursor of PostgreSQL write transactions, which defers row updates."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


class _PipelinedCursor:
    """A cursor of a connection in pipeline mode, for :class:`Transaction`.

    Statements are sent without waiting for their results; reading a result (``fetchone``,
    ``fetchall``, ``rowcount``) sends what is queued and waits for it. A transaction so
    waits for the server only where it needs an answer (a version to check, an id, a lease
    that still holds) instead of after every statement.

    The row updates of one transition (``update_stage`` for its changed stages, then
    ``update_workflow`` or ``bump_workflow``) are *deferred*: they go out as ``WITH``
    clauses of the statement that inserts the messages the transition produced
    (:meth:`execute_absorbing`), or as one statement of their own before any other
    statement and at the end of the transaction. So they run in the order they were issued
    relative to every other statement, and one statement never changes a row twice.
    """

    def __init__(
        self, cur: psycopg.Cursor[Any], pipeline: psycopg.Pipeline, queries: dict[str, str]
    ) -> None:
        self._cur = cur
        self._pipeline = pipeline
        self._update_stage = queries["update_stage"]
        self._workflow_writes = (queries["update_workflow"], queries["bump_workflow"])
        self._deferred: list[tuple[str, Sequence[Any]]] = []
        self._workflow_deferred = False

    def flush(self) -> None:
        """Send the deferred writes (as one statement)."""
        if not self._deferred:
            return
        *head, (last_sql, last_params) = self._deferred
        self._deferred = []
        self._workflow_deferred = False
        if not head:
            self._cur.execute(last_sql, last_params)
            return
        sql = _with_clauses(tuple(h for h, _ in head), last_sql)
        self._cur.execute(sql, [p for _, params in head for p in params] + list(last_params))

    def execute_absorbing(self, sql: str, params: Sequence[Any]) -> Any:
        """Run ``sql`` (a ``WITH`` statement) with the deferred writes as leading clauses.

        Only for statements that do not touch the deferred rows (stages and workflows):
        data-modifying ``WITH`` clauses run once, to completion, on the statement's
        snapshot, which the main statement therefore must not need to see.
        """
        if not self._deferred:
            return self._cur.execute(sql, params)
        deferred, self._deferred = self._deferred, []
        self._workflow_deferred = False
        merged = _with_clauses(tuple(d for d, _ in deferred), sql)
        return self._cur.execute(merged, [p for _, ps in deferred for p in ps] + list(params))

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        if sql in self._workflow_writes and not self._workflow_deferred:
            self._deferred.append((sql, params))  # closes this transition's group
            self._workflow_deferred = True
            return None
        self.flush()
        return self._cur.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any:
        self.flush()
        if sql == self._update_stage:
            rows = list(params)
            if rows:
                # Opens a transition's group: (status, body, id) rows, one statement.
                values = [v for status, body, stage_id in rows for v in (stage_id, status, body)]
                self._deferred.append((_stage_updates(len(rows)), values))
            return None
        return self._cur.executemany(sql, params)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        self.flush()
        self._pipeline.sync()
        return self._cur.rowcount


@functools.lru_cache(maxsize=256)
def _with_clauses(writes: tuple[str, ...], statement: str) -> str:
    """``statement`` preceded by ``writes`` as data-modifying ``WITH`` clauses."""
    clauses = ", ".join(f"deferred_{i} AS ({_uncommented(w)})" for i, w in enumerate(writes))
    statement = _uncommented(statement)
    if statement.startswith("WITH "):
        return f"WITH {clauses}, {statement[len('WITH ') :]}"
    return f"WITH {clauses} {statement}"


def _uncommented(sql: str) -> str:
    """``sql`` without its ``--`` comment lines."""
    return "\n".join(ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")).strip()


@functools.lru_cache(maxsize=64)
def _stage_updates(count: int) -> str:
    """An update of ``count`` stage rows, parameters ``(id, status, body)`` per row."""
    rows = ", ".join(["(%s, %s, %s)"] * count)
    return (
        "UPDATE stages SET status = v.status, body = v.body "
        f"FROM (VALUES {rows}) AS v (id, status, body) WHERE stages.id = v.id"
    )
