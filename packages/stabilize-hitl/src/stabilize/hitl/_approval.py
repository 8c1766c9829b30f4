"""The approval gate task."""

from __future__ import annotations

from typing import Any

from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.tasks import ContextReader
from stabilize.tasks.interface import Task
from stabilize.tasks.result import TaskResult

TIMEOUT_ACTIONS = ("approve", "reject", "escalate")

# Clears the signal that resumed the gate, so that the next suspension waits afresh (the
# sender, stage.signal_user, is replaced by the next signal's).
_CLEAR = {"_signal_name": None, "_signal_data": None}


class ApprovalTask(Task):
    """Waits for a human decision.

    Registered as ``approval``, ``human_approval`` and ``hitl_approval``.

    Context keys:
        approval_timeout_seconds: Decide by default after this long (none: wait forever).
        approval_timeout_action: ``approve``, ``reject`` (default) or ``escalate`` (keep
            waiting, with ``escalated`` set and the ``stage.suspended`` event saying so).
        approval_escalation_timeout_seconds: After an escalation, reject after this long
            (none: wait forever).
        approval_reject_continues: A rejection ends the stage FAILED_CONTINUE instead of
            TERMINAL, so the workflow goes on.

    Outputs: ``approved``, ``approval`` (the data sent with the decision),
    ``approved_by`` / ``rejected_by``, and ``approval_timed_out`` when a timeout decided.
    """

    def execute(self, stage: StageExecution) -> TaskResult:
        """Suspend until a decision arrives, then turn it into the stage's result.

        Args:
            stage: The gate's stage; its context holds the ``approval_*`` settings and,
                once decided, the delivered signal.

        Returns:
            ``suspend()`` while waiting (with a timer when a timeout is set), then a
            success for an approval, or TERMINAL (FAILED_CONTINUE with
            ``approval_reject_continues``) for a rejection.

        Raises:
            TaskConfigError: An ``approval_*`` key is malformed, naming it.
        """
        ctx = ContextReader(stage.context, "ApprovalTask")
        action = ctx.choice("approval_timeout_action", TIMEOUT_ACTIONS, "reject")
        name = stage.context.get("_signal_name")
        data = dict(stage.context.get("_signal_data") or {})
        user = stage.signal_user
        if name is None:
            wait = ctx.number("approval_timeout_seconds", None, minimum=0)
            if stage.context.get("escalated"):
                wait = ctx.number("approval_escalation_timeout_seconds", None, minimum=0)
            return TaskResult.suspend(signal_timeout=wait)
        timed_out = name == "timeout"
        if timed_out:
            if stage.context.get("escalated"):
                name = "reject"
            elif action == "escalate":
                wait = ctx.number("approval_escalation_timeout_seconds", None, minimum=0)
                return TaskResult.suspend(
                    context={**_CLEAR, "escalated": True}, signal_timeout=wait
                )
            else:
                name = action
            data = {"reason": "the approval timed out"}
        if name == "approve":
            outputs: dict[str, Any] = {"approved": True, "approval": data, "approved_by": user}
            if timed_out:
                outputs["approval_timed_out"] = True
            return TaskResult.success(outputs=outputs)
        if name == "reject":
            outputs = {"approved": False, "approval": data, "rejected_by": user}
            if timed_out:
                outputs["approval_timed_out"] = True
            reason = data.get("note") or data.get("reason") or "no reason given"
            error = f"stage {stage.ref_id!r} was rejected by {user or 'someone'}: {reason}"
            if ctx.flag("approval_reject_continues", False):
                return TaskResult.failed_continue(
                    error, outputs=outputs, context={"approved": False}
                )
            return TaskResult(WorkflowStatus.TERMINAL, {"approved": False}, outputs, error=error)
        # Any other signal is not a decision: keep waiting.
        return TaskResult.suspend(context=dict(_CLEAR))

    @property
    def aliases(self) -> list[str]:
        """``human_approval`` and ``hitl_approval``."""
        return ["human_approval", "hitl_approval"]
