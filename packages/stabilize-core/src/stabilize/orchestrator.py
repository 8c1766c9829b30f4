"""The orchestrator: submits workflows and cancels, restarts, pauses, resumes or signals them.

:func:`send_stage_signal` is the signal on its own, for callers that hold a queue rather
than an orchestrator (``stabilize.hitl``'s ``approve``, ``reject`` and ``send_signal``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stabilize.backends._base import Backend
from stabilize.engine.transitions import (
    cancel_stages,
    cancel_workflow,
    pause_workflow,
    region_refs,
    restart_stage,
    resume_workflow,
    signal_stage,
)
from stabilize.message_kinds import START_WORKFLOW
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.models.workflow import Workflow
from stabilize.persistence.store import (
    WorkflowNotFoundError,
    WorkflowStore,
    insert_new_workflow,
    validate_for_submit,
)
from stabilize.queue.queue import Queue
from stabilize.records import Effects, Message

__all__ = ["Orchestrator", "send_stage_signal"]


class Orchestrator:
    """Submits workflows to a queue and steers running ones.

    Each operation is one transaction on the queue's database: a workflow that is
    started is stored (if it was not) together with the message that starts it.

    Args:
        queue: The queue workers drain.
        store: The workflow store (must share the queue's database).
        clock: Seconds since the epoch (injectable for tests).
    """

    _instance: Orchestrator | None = None

    def __init__(
        self,
        queue: Queue,
        store: WorkflowStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store is not None and store.backend is not queue.backend:
            raise ValueError("the store and the queue must use the same database")
        self.queue = queue
        self.store = store
        self.backend = queue.backend
        self._clock = clock
        Orchestrator._instance = self

    @classmethod
    def get_instance(cls) -> Orchestrator | None:
        """The orchestrator created last in this process (kept for compatibility).

        Returns:
            That orchestrator, or None when none was created.
        """
        return cls._instance

    def start(self, execution: Workflow, handler_config: object = None) -> None:
        """Start a workflow, storing it first if needed.

        Starting a workflow that has started or finished already does nothing.

        Args:
            execution: The workflow.
            handler_config: Accepted for compatibility; unused.

        Raises:
            WorkflowValidationError: the workflow is invalid (nothing is written).
        """
        submit_workflow(self.backend, execution, self._now())

    def cancel(self, execution: Workflow | str, user: str = "", reason: str = "") -> None:
        """Cancel a workflow: running stages end CANCELED, queued work is dropped.

        A task running right now finishes, but its result is discarded. Canceling a
        finished workflow changes nothing.

        Args:
            execution: The workflow, or its id.
            user: Who asked (recorded on the workflow and in its event).
            reason: Why, in words.

        Raises:
            WorkflowNotFoundError: No workflow has this id.
        """
        self._apply(execution, lambda wf, now: cancel_workflow(wf, user, reason, now))

    def cancel_stage(
        self, execution: Workflow | str, ref_id: str, user: str = "", reason: str = ""
    ) -> None:
        """Cancel one stage; the rest of the workflow carries on (see :func:`cancel_stages`).

        Args:
            execution: The workflow, or its id.
            ref_id: The stage's ``ref_id``.
            user: Who asked.
            reason: Why, in words.

        Raises:
            KeyError: the workflow has no stage with this ``ref_id``.
            WorkflowNotFoundError: No workflow has this id.
        """

        def transition(wf: Workflow, now: int) -> Effects:
            wf.stage_by_ref_id(ref_id)
            return cancel_stages(wf, [ref_id], user, reason, now)

        self._apply(execution, transition)

    def cancel_region(
        self, execution: Workflow | str, region: str, user: str = "", reason: str = ""
    ) -> None:
        """Cancel every stage whose ``cancel_region`` is ``region``.

        Args:
            execution: The workflow, or its id.
            region: The region's name, as set on the stages.
            user: Who asked.
            reason: Why, in words.

        Raises:
            KeyError: no stage of the workflow belongs to ``region``.
            WorkflowNotFoundError: No workflow has this id.
        """

        def transition(wf: Workflow, now: int) -> Effects:
            refs = region_refs(wf, region)
            if not refs:
                raise KeyError(f"workflow {wf.id} has no stage in cancel_region {region!r}")
            return cancel_stages(wf, refs, user, reason, now)

        self._apply(execution, transition)

    def signal(
        self,
        execution: Workflow | str,
        stage: str,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        persistent: bool = True,
        user: str | None = None,
    ) -> None:
        """Send a named signal to a stage (by id or ``ref_id``); see :func:`send_stage_signal`.

        Args:
            execution: The workflow, or its id.
            stage: The stage's id or ``ref_id``.
            name: The signal's name.
            data: JSON values delivered with it (the waiting task's ``signal_data``).
            persistent: Keep a signal sent before the stage waits, for when it does;
                False refuses it instead.
            user: Who sent it.

        Raises:
            SignalError: the stage does not exist, has finished, or is not waiting and the
                signal is not persistent. Nothing is changed then.
            WorkflowNotFoundError: No workflow has this id.
        """
        workflow_id = execution if isinstance(execution, str) else execution.id
        send_stage_signal(
            self.queue,
            workflow_id,
            stage,
            name,
            data,
            persistent=persistent,
            user=user,
            clock=self._clock,
        )

    def restart(self, execution: Workflow | str, stage_id: str, user: str | None = None) -> None:
        """Run a finished stage again, and every stage downstream of it.

        The usual use is a stage that failed: the workflow, if it ended because of it, is
        RUNNING again and a worker picks the stage up. The stage and its downstream
        stages start over from NOT_STARTED (tasks too; outputs and errors cleared, context
        kept). See :func:`~stabilize.engine.transitions.restart_stage`.

        Args:
            execution: The workflow, or its id.
            stage_id: The stage's id or ``ref_id``.
            user: Who asked (recorded in the ``stage.restarted`` event).

        Raises:
            RestartError: the stage does not exist, is running or waiting, has not run
                yet, has a downstream stage still running, or the workflow was canceled.
                Nothing is changed then.
            WorkflowNotFoundError: no workflow has this id.
        """

        def transition(wf: Workflow, now: int) -> Effects:
            return restart_stage(wf, stage_id, user, now)

        self._apply(execution, transition)

    def pause(self, execution: Workflow | str) -> None:
        """Pause a running workflow: tasks in flight finish, nothing new starts.

        A workflow that is not RUNNING is left as it is.

        Args:
            execution: The workflow, or its id.

        Raises:
            WorkflowNotFoundError: No workflow has this id.
        """
        self._apply(execution, pause_workflow)

    def resume(self, execution: Workflow | str) -> None:
        """Resume a paused workflow: the tasks parked by the pause are queued again.

        A workflow that is not PAUSED is left as it is.

        Args:
            execution: The workflow, or its id.

        Raises:
            WorkflowNotFoundError: No workflow has this id.
        """
        self._apply(execution, resume_workflow)

    unpause = resume

    def get_execution(self, workflow_id: str) -> Workflow:
        """Load a workflow (a fresh copy).

        Args:
            workflow_id: The workflow's id.

        Returns:
            The workflow as stored now.

        Raises:
            RuntimeError: The orchestrator was made without a store.
            WorkflowNotFoundError: No workflow has this id.
        """
        if self.store is None:
            raise RuntimeError("Orchestrator.get_execution needs a store")
        return self.store.retrieve(workflow_id)

    def _apply(
        self, execution: Workflow | str, transition: Callable[[Workflow, int], Effects]
    ) -> None:
        workflow_id = execution if isinstance(execution, str) else execution.id
        apply_transition(self.backend, workflow_id, transition, self._now())

    def _now(self) -> int:
        return int(self._clock() * 1000)


def send_stage_signal(
    queue: Queue,
    workflow_id: str,
    stage: str,
    name: str,
    data: dict[str, Any] | None = None,
    *,
    persistent: bool = True,
    user: str | None = None,
    guard: Callable[[StageExecution], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Send a named signal to a stage of a stored workflow, in one transaction.

    A SUSPENDED stage resumes at once: its suspended task runs again with the signal
    (``stabilize.hitl.get_signal`` reads it). With ``persistent``, a stage that has not
    suspended yet keeps the signal and receives it when it does. The stage is read, checked
    and changed in the transaction that records the signal, so two senders never both see
    a stage waiting for one decision.

    Args:
        queue: The queue of the workflow's database.
        workflow_id: The workflow's id.
        stage: The stage's id or ``ref_id``.
        name: The signal's name.
        data: JSON values delivered with it.
        persistent: Keep a signal sent before the stage waits, for when it does;
            False refuses it instead.
        user: Who sent it (the stage's ``signal_user``, and recorded in the event log).
        guard: Called with the stage as stored, inside the transaction, when the stage
            exists and neither it nor its workflow has ended; it refuses the signal by
            raising (a :class:`~stabilize.errors.SignalError`, say), and nothing is
            changed then.
        clock: Seconds since the epoch, for the signal's time.

    Raises:
        SignalError: the stage does not exist, has finished, or is not waiting and the
            signal is not persistent; or the data cannot be stored as JSON. Nothing is
            changed then.
        WorkflowNotFoundError: no workflow has this id.
    """

    def transition(wf: Workflow, now: int) -> Effects:
        target = wf.index.by_id.get(stage) or wf.index.by_ref.get(stage)
        ended = wf.status.is_complete or (target is not None and target.status.is_complete)
        if guard is not None and target is not None and not ended:
            guard(target)
        return signal_stage(wf, stage, name, data, now, persistent=persistent, user=user)

    apply_transition(queue.backend, workflow_id, transition, int(clock() * 1000))


def submit_workflow(backend: Backend, workflow: Workflow, now: int) -> bool:
    """Store ``workflow`` if it is new and queue its start, in one transaction.

    A workflow this process stored (or last saw) NOT_STARTED is started from the
    backend's cache, without reading its row: if another process has started it since,
    the start is stale and the processor drops it (see
    :func:`stabilize.engine.transitions.start_workflow`).

    Returns:
        True when a start was queued (False: it had started or finished already, as far
        as this process knows).

    Raises:
        WorkflowValidationError: the workflow is invalid (nothing is written).
    """
    with backend.transaction() as tx:
        cached = backend.cache.get(workflow.id)
        if (
            cached is not None
            and cached.status is WorkflowStatus.NOT_STARTED
            and cached.start_time is None
        ):
            # Queued without reading the row. Had another process started the workflow
            # since this one cached it, the start would be stale: the processor drops it.
            tx.enqueue([Message(START_WORKFLOW, workflow.id)], now)
            return True
        stored = tx.workflow(workflow.id)
        if stored is None:
            validate_for_submit(backend, workflow)
            insert_new_workflow(tx, workflow, now)
            stored = workflow
        if stored.status.is_complete or stored.start_time is not None:
            return False
        tx.enqueue([Message(START_WORKFLOW, workflow.id)], now)
        return True


def apply_transition(
    backend: Backend,
    workflow_id: str,
    transition: Callable[[Workflow, int], Effects],
    now: int,
) -> Effects:
    """Apply a transition to a stored workflow and commit its effects in one transaction.

    Raises:
        WorkflowNotFoundError: no workflow has this id.
    """
    with backend.transaction() as tx:
        wf = tx.workflow(workflow_id)
        if wf is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        fx = transition(wf, now)
        tx.save(wf, fx, now)
        tx.enqueue(fx.messages, now)
        return fx
