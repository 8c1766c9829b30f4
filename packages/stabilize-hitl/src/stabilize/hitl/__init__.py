"""Human in the loop: approval gates and signals that wait durably for people.

An :class:`ApprovalTask` suspends its stage until someone calls :func:`approve` or
:func:`reject` (or ``stabilize approve`` / ``stabilize reject``). The wait is persisted:
it survives restarts and may last for days, and no worker is held meanwhile. The
decision, its author and note are recorded with the stage and in the event log.
"""

from __future__ import annotations

from stabilize.hitl._approval import ApprovalTask
from stabilize.hitl._signals import approve, get_signal, reject, send_signal

__all__ = ["ApprovalTask", "approve", "get_signal", "reject", "send_signal"]
