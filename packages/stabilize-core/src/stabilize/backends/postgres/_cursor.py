"""The cursors of PostgreSQL transactions: writes (pipelined, gathered) and reads."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from stabilize.backends.postgres._arrays import BigintArray, TextArray

if TYPE_CHECKING:
    import psycopg


class _Wrapping:
    """What the two cursors below pass through to the psycopg cursor they wrap."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


class _PipelinedCursor(_Wrapping):
    """A cursor of a connection in pipeline mode, for :class:`Transaction`.

    Statements are sent without waiting for their results; reading a result (``fetchone``,
    ``fetchall``, ``rowcount``) sends what is queued and waits for it. A transaction so
    waits for the server only where it needs an answer (a version to check, a lease that
    still holds, what a claim took) instead of after every statement.

    The connection is in autocommit mode: the cursor opens the transaction itself, with a
    ``BEGIN`` queued before the first statement it sends, and :meth:`commit` queues the
    ``COMMIT`` after the last. psycopg's own ``BEGIN`` would wait for the server before the
    first statement went out, and its ``commit()`` would wait again after the pipeline's
    last sync; here the last writes and the ``COMMIT`` share the pipeline's closing sync.
    A transaction that sent nothing sends neither.

    The writes of transitions are *gathered* rather than sent: stage rows
    (``update_stage``), workflow rows (``update_workflow``, ``bump_workflow``), new
    messages (:meth:`defer_messages`) and rows of the event log (:meth:`defer_events`).
    They go out together as one statement (:func:`write_statement`, the same text every
    time, so the server prepares it once) before any other statement and at the end of
    the transaction. Every other statement therefore sees them, as if they had been sent
    one by one. A row written twice is written once with its last values (a workflow bumped
    after a full update keeps the body of that update), so one statement never changes a
    row twice.
    """

    def __init__(
        self,
        cur: psycopg.Cursor[Any],
        pipeline: psycopg.Pipeline,
        queries: dict[str, str],
        write_sql: str,
    ) -> None:
        super().__init__(cur)
        self._pipeline = pipeline
        self._update_stage = queries["update_stage"]
        self._update_workflow = queries["update_workflow"]
        self._bump_workflow = queries["bump_workflow"]
        self._write_sql = write_sql
        self._stages: dict[str, tuple[Any, Any]] = {}
        self._workflows: dict[str, list[Any]] = {}
        self._messages: list[Sequence[Any]] = []
        self._events: list[Sequence[Any]] = []
        self._begun = False

    def defer_messages(self, rows: Iterable[Sequence[Any]]) -> None:
        """Gather rows of new messages (id, then the columns of ``queue_messages``)."""
        self._messages.extend(rows)

    def defer_events(self, rows: Iterable[Sequence[Any]]) -> None:
        """Gather rows of the event log (see :func:`stabilize.backends._base.event_row`)."""
        self._events.extend(rows)

    def flush(self) -> None:
        """Send the gathered writes (as one statement, not waited for)."""
        if not (self._stages or self._workflows or self._messages or self._events):
            return
        stages, self._stages = self._stages, {}
        workflows, self._workflows = self._workflows, {}
        messages, self._messages = self._messages, []
        events, self._events = self._events, []
        params: list[Any] = [TextArray(stages)]
        params += _arrays(list(stages.values()), _STAGE_TYPES)
        params.append(TextArray(workflows))
        params += _arrays(list(workflows.values()), _WORKFLOW_TYPES)
        params += _arrays(messages, _MESSAGE_TYPES)
        params += _arrays(events, _EVENT_TYPES)
        self._begin()
        self._cur.execute(self._write_sql, params)

    def commit(self) -> None:
        """Queue the gathered writes and the ``COMMIT`` (the pipeline's exit sends them)."""
        self.flush()
        if self._begun:
            self._cur.execute(b"COMMIT")

    def _begin(self) -> None:
        if not self._begun:
            self._cur.execute(b"BEGIN")
            self._begun = True

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        if sql == self._bump_workflow:
            version, updated_at, event_seq, workflow_id = params
            entry = self._workflows.get(workflow_id)
            if entry is None:
                self._workflows[workflow_id] = [None, None, version, updated_at, event_seq]
            else:  # keeps the status and body of an earlier full update
                entry[2:] = [version, updated_at, event_seq]
            return None
        if sql == self._update_workflow:
            status, body, version, updated_at, event_seq, workflow_id = params
            self._workflows[workflow_id] = [status, body, version, updated_at, event_seq]
            return None
        self.flush()
        self._begin()
        return self._cur.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any:
        if sql == self._update_stage:
            for status, body, stage_id in params:
                self._stages[stage_id] = (status, body)
            return None
        self.flush()
        self._begin()
        return self._cur.executemany(sql, params)

    @property
    def rowcount(self) -> int:
        self.flush()
        self._pipeline.sync()
        return self._cur.rowcount


class _ReadCursor(_Wrapping):
    """The cursor of a read transaction: its ``BEGIN`` goes out with the first statement.

    The connection is in autocommit mode (see :class:`_PipelinedCursor`). Sent on its own,
    the read's ``BEGIN`` would be a round trip; here it goes in a pipeline with the read's
    first statement, and both answers come back together. A read that sends nothing
    sends no ``BEGIN``.
    """

    def __init__(self, cur: psycopg.Cursor[Any], begin: bytes) -> None:
        super().__init__(cur)
        self._begin: bytes | None = begin

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        begin, self._begin = self._begin, None
        if begin is None:
            return self._cur.execute(sql, params)
        with self._cur.connection.pipeline():
            self._cur.execute(begin)
            return self._cur.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any:
        begin, self._begin = self._begin, None
        if begin is not None:
            self._cur.execute(begin)
        return self._cur.executemany(sql, params)


_STAGE_TYPES = (TextArray, TextArray)  # status, body
_WORKFLOW_TYPES = (TextArray, TextArray, BigintArray, BigintArray, BigintArray)
_MESSAGE_TYPES = (
    BigintArray,  # id
    TextArray,  # workflow_id
    TextArray,  # kind
    TextArray,  # stage_id
    TextArray,  # task_id
    TextArray,  # payload
    BigintArray,  # deliver_at
    BigintArray,  # attempts
    TextArray,  # lease_owner
    BigintArray,  # lease_token
    BigintArray,  # lease_until
    BigintArray,  # created_at
)
_EVENT_TYPES = (
    TextArray,  # workflow_id
    BigintArray,  # sequence
    TextArray,  # event_type
    TextArray,  # entity_type
    TextArray,  # entity_id
    BigintArray,  # timestamp
    TextArray,  # data
    BigintArray,  # last_sequence
)


def _arrays(rows: Sequence[Sequence[Any]], types: tuple[type[list[Any]], ...]) -> list[Any]:
    """The columns of ``rows``, each as an array of its type (empty when there are none)."""
    if not rows:
        return [kind() for kind in types]
    return [kind(column) for kind, column in zip(types, zip(*rows, strict=True), strict=True)]


@functools.lru_cache(maxsize=16)
def write_statement(queue_channel: str, event_table: str, event_channel: str) -> str:
    """The statement that sends a transaction's gathered writes (see :class:`_PipelinedCursor`).

    Parameters, in order: stage ids, statuses, bodies; workflow ids, statuses (NULL: keep),
    bodies (NULL: keep), versions, update times, event sequences; the 12 columns of the
    new messages (id first); the 8 columns of the rows of the log at ``event_table`` (a
    schema prefix; ``""``: this schema). It notifies ``queue_channel`` when a message was
    left for any worker to claim, and ``event_channel`` with the id of each workflow whose
    events it recorded. The arrays go in binary (``%b``, see
    :mod:`stabilize.backends.postgres._arrays`).
    """
    channel = queue_channel.replace("'", "''")
    ev_channel = event_channel.replace("'", "''")
    return f"""
WITH written_stages AS (
    UPDATE stages SET status = v.status, body = v.body
    FROM unnest(%b::text[], %b::text[], %b::text[]) AS v (id, status, body)
    WHERE stages.id = v.id
), written_workflows AS (
    UPDATE workflows SET
        status = COALESCE(v.status, workflows.status),
        body = COALESCE(v.body, workflows.body),
        version = v.version, updated_at = v.updated_at, event_seq = v.event_seq
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::bigint[])
        AS v (id, status, body, version, updated_at, event_seq)
    WHERE workflows.id = v.id
), queued AS (
    INSERT INTO queue_messages
        (id, workflow_id, kind, stage_id, task_id, payload, deliver_at, attempts, lease_owner,
         lease_token, lease_until, created_at)
    SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[],
        %b::text[], %b::bigint[], %b::int[], %b::text[], %b::bigint[], %b::bigint[],
        %b::bigint[])
    RETURNING lease_owner
), recorded AS (
    INSERT INTO {event_table}events
        (workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data,
         last_sequence)
    SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[],
        %b::bigint[], %b::text[], %b::bigint[])
    RETURNING workflow_id
)
SELECT pg_notify('{channel}', '') FROM (SELECT 1 FROM queued WHERE lease_owner IS NULL
    LIMIT 1) AS waiting
UNION ALL
SELECT pg_notify('{ev_channel}', workflow_id) FROM (SELECT DISTINCT workflow_id
    FROM recorded) AS changed
"""
