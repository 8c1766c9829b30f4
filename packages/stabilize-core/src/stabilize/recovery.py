"""Workflow-level recovery: resume RUNNING workflows that have no message left.

Every transition commits the state with the message that continues it, so a running
workflow always has a message in the queue: due, delayed or leased. The processor's own
recovery (``QueueProcessorConfig.recover_on_start``, :meth:`QueueProcessor.run_recovery`)
releases the leases of dead workers so that their messages run again. What it cannot see
is a workflow whose messages are gone altogether (deleted by hand, lost with a restored
backup, dropped by an engine bug): :class:`WorkflowRecovery` finds those and enqueues a
run of each task that was RUNNING.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from stabilize.errors import StabilizeError
from stabilize.message_kinds import RUN_TASK
from stabilize.models.status import WorkflowStatus
from stabilize.models.workflow import Workflow
from stabilize.persistence.store import WorkflowStore
from stabilize.queue.queue import Queue
from stabilize.records import Message

log = logging.getLogger("stabilize.recovery")


class RecoveryError(StabilizeError):
    """Recovery could not read the workflows it should check."""


@dataclass
class RecoveryResult:
    """What recovery did with one workflow.

    Attributes:
        workflow_id: The workflow.
        status: ``"recovered"`` (messages enqueued), ``"skipped"`` (nothing to do; the
            message says why) or ``"failed"`` (the message holds the error).
        message: What happened, in words.
        stages_requeued: Stages whose running task was enqueued again.
    """

    workflow_id: str
    status: str
    message: str
    stages_requeued: int = 0


class WorkflowRecovery:
    """Finds RUNNING workflows with no message in the queue and resumes them.

    For each such workflow, a run of every RUNNING task of a RUNNING stage is enqueued
    (the task runs again: at-least-once for interrupted work). The check and the enqueue
    share one transaction, and a workflow that has any message (due, delayed or leased)
    is left alone, so recovery is idempotent and safe to run while workers run. Stages
    that wait for a signal (SUSPENDED), a mutex or a timer are not touched.

    Args:
        store: The workflow store.
        queue: The queue (on the store's database).
        max_recovery_age_hours: Only workflows started within this many hours.
        batch_size: Workflows read per page.
        clock: Epoch seconds (injectable for tests).
    """

    def __init__(
        self,
        store: WorkflowStore,
        queue: Queue,
        max_recovery_age_hours: float = 24.0,
        batch_size: int = 100,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store.backend is not queue.backend:
            raise ValueError(
                "WorkflowRecovery needs the store and the queue on the same database "
                f"(store: {store.backend.location}, queue: {queue.backend.location})"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.store = store
        self.queue = queue
        self.max_recovery_age_hours = max_recovery_age_hours
        self.batch_size = batch_size
        self._clock = clock

    def recover_pending_workflows(self, application: str | None = None) -> list[RecoveryResult]:
        """Check every RUNNING workflow (of ``application``, if given) and resume the stuck.

        Args:
            application: Only the workflows of this application (default: all).

        Returns:
            One result per RUNNING workflow checked.

        Raises:
            RecoveryError: The workflows could not be listed.
        """
        now = int(self._clock() * 1000)
        cutoff = now - int(self.max_recovery_age_hours * 3_600_000)
        results: list[RecoveryResult] = []
        offset = 0
        while True:
            try:
                page = self.store.list_workflows(
                    application=application,
                    status=WorkflowStatus.RUNNING,
                    limit=self.batch_size,
                    offset=offset,
                )
            except Exception as exc:
                raise RecoveryError(f"could not list running workflows: {exc}") from exc
            offset += len(page)
            for wf in page:
                if wf.start_time is not None and wf.start_time < cutoff:
                    continue
                results.append(self._recover(wf.id, now))
            if len(page) < self.batch_size:
                break
        recovered = sum(1 for r in results if r.status == "recovered")
        failed = sum(1 for r in results if r.status == "failed")
        if recovered or failed:
            log.warning(
                "workflow recovery: %d recovered, %d failed, %d checked",
                recovered,
                failed,
                len(results),
            )
        return results

    def _recover(self, workflow_id: str, now: int) -> RecoveryResult:
        try:
            with self.store.backend.transaction() as tx:
                wf = tx.workflow(workflow_id)
                if wf is None or wf.status is not WorkflowStatus.RUNNING:
                    return RecoveryResult(workflow_id, "skipped", "no longer running")
                tx.cur.execute(tx.q["workflow_has_messages"], (workflow_id,))
                if tx.cur.fetchone() is not None:
                    return RecoveryResult(workflow_id, "skipped", "has a message in the queue")
                messages = _resume_messages(wf)
                if not messages:
                    return RecoveryResult(
                        workflow_id,
                        "skipped",
                        "no message in the queue, but no running task to resume either "
                        "(stages wait for a signal, a mutex or a timer)",
                    )
                tx.enqueue(messages, now)
        except Exception as exc:
            log.exception("could not recover workflow %s", workflow_id)
            return RecoveryResult(workflow_id, "failed", f"{type(exc).__name__}: {exc}")
        refs = ", ".join(repr(wf.stage_by_id(m.stage_id or "").ref_id) for m in messages)
        log.warning("workflow %s had no message in the queue; resumed %s", workflow_id, refs)
        return RecoveryResult(
            workflow_id, "recovered", f"re-queued the running task of {refs}", len(messages)
        )


def _resume_messages(wf: Workflow) -> list[Message]:
    """A run of each RUNNING task of a RUNNING stage (the run fences stale results)."""
    messages = []
    for stage in wf.stages:
        if stage.status is not WorkflowStatus.RUNNING:
            continue
        for task in stage.tasks:
            if task.status is WorkflowStatus.RUNNING:
                payload = {"run": task.version}
                messages.append(Message(RUN_TASK, wf.id, stage.id, task.id, payload))
                break
    return messages


def recover_on_startup(
    store: WorkflowStore,
    queue: Queue,
    application: str | None = None,
    max_age_hours: float = 24.0,
) -> list[RecoveryResult]:
    """Run :class:`WorkflowRecovery` once, as a worker starts.

    Args:
        store: The workflow store.
        queue: The queue (on the store's database).
        application: Only this application's workflows.
        max_age_hours: Only workflows started within this many hours.

    Returns:
        One result per RUNNING workflow checked.
    """
    recovery = WorkflowRecovery(store, queue, max_recovery_age_hours=max_age_hours)
    return recovery.recover_pending_workflows(application=application)
