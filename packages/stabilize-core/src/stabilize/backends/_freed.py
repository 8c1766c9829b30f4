"""Ids of acknowledged messages that messages enqueued in the same transaction may take.

A message acknowledged in a transaction is deleted; a message the same transaction
enqueues may be inserted under its id instead of a new one (see
:meth:`stabilize.backends._base.Transaction.ack`). Which id a new message takes is decided
here, without I/O.
"""

from __future__ import annotations

from bisect import bisect_left, insort

Freed = tuple[int, int]
"""A freed id and the last lease token of its message: a new message under the id starts
above that token, so that no lease of the old message can match the new one."""


class FreedIds:
    """The freed ids of one transaction, by the workflow of the message that had them.

    Messages enqueued in one transaction get ids that increase in the order they are
    enqueued, as new ids do: a freed id is taken only when it is above every id given so
    far (so that messages due at the same time are still claimed in the order they were
    sent). An id of the new message's own workflow is taken first: its rows in the table
    and in the index by workflow go back where the deleted ones were.
    """

    def __init__(self) -> None:
        self._by_workflow: dict[str, list[Freed]] = {}
        self._above = 0
        """The largest id given to a message of this transaction so far."""

    def __bool__(self) -> bool:
        return bool(self._by_workflow)

    def free(self, workflow_id: str, msg_id: int, token: int) -> None:
        """Note that ``msg_id`` (of ``workflow_id``, last leased under ``token``) is free."""
        ids = self._by_workflow.get(workflow_id)
        if ids is None:
            self._by_workflow[workflow_id] = [(msg_id, token)]
        else:
            insort(ids, (msg_id, token))

    def take(self, workflow_id: str) -> Freed | None:
        """A freed id for a new message of ``workflow_id`` (no longer free), or None."""
        above = self._above
        key = workflow_id
        ids = self._by_workflow.get(key)
        if ids is None or ids[-1][0] <= above:
            other = next((k for k, v in self._by_workflow.items() if v[-1][0] > above), None)
            if other is None:
                return None
            key, ids = other, self._by_workflow[other]
        freed = ids.pop(0 if ids[0][0] > above else bisect_left(ids, (above + 1,)))
        if not ids:
            del self._by_workflow[key]
        self._above = freed[0]
        return freed

    def given(self, msg_id: int) -> None:
        """A message of this transaction got the new id ``msg_id`` (above every freed one)."""
        if msg_id > self._above:
            self._above = msg_id
