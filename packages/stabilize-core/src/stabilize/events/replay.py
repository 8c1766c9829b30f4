"""Rebuilding a workflow's state from its event log alone (replay and time travel).

The log of a workflow starts with ``workflow.created`` (the whole definition) and holds
one ``state.changed`` event per transition, first among that transition's events, with the
diff of every row it changed. Applying them in order rebuilds the exact state at any
sequence number; no task runs again.
"""

from __future__ import annotations

from collections.abc import KeysView
from datetime import UTC, datetime
from typing import Any, Protocol

from stabilize.events.diff import apply, diff
from stabilize.models.event import Event, EventType
from stabilize.models.stage import StageExecution
from stabilize.models.workflow import Workflow


class EventSource(Protocol):
    """Where the replayer reads events (a ``SqliteEventStore`` or ``PostgresEventStore``)."""

    def get_events(self, workflow_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events of one workflow with ``sequence > since``, in order."""
        ...


class ReplayError(LookupError):
    """The log does not hold what a replay needs (no ``workflow.created``, say)."""


class ReplayedWorkflow(Workflow):
    """A workflow rebuilt from its log that also answers the original package's keys.

    The original ``rebuild_workflow_state`` returned a dict; code written for it indexes
    the result (``state["status"]``, ``state["stages"][stage_id]["status"]``), and that
    keeps working (issue 14). The keys: ``workflow_id``, ``status`` (a string),
    ``application``, ``name``, ``start_time`` and ``end_time`` (ISO 8601 or None),
    ``context``, ``stages`` (each stage's dict by stage id, with ``status`` a string) and
    ``tasks`` (each task's dict by task id, with its ``stage_id``). Everything else is a
    :class:`~stabilize.models.workflow.Workflow`.
    """

    def to_state(self) -> dict[str, Any]:
        """The state as the original package's dict."""
        return {
            "workflow_id": self.id,
            "status": self.status.value,
            "application": self.application,
            "name": self.name,
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "context": self.context,
            "stages": {s.id: s.to_dict() for s in self.stages},
            "tasks": {
                t.id: {**t.to_dict(), "stage_id": s.id} for s in self.stages for t in s.tasks
            },
        }

    def __getitem__(self, key: str) -> Any:
        return self.to_state()[key]

    def __contains__(self, key: object) -> bool:
        return key in _STATE_KEYS

    def keys(self) -> KeysView[str]:
        """The keys of :meth:`to_state`."""
        return self.to_state().keys()

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]``, or ``default`` for a key the state does not have."""
        return self.to_state().get(key, default)


_STATE_KEYS = frozenset(
    {"workflow_id", "status", "application", "name", "start_time", "end_time"}
    | {"context", "stages", "tasks"}
)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


class EventReplayer:
    """Rebuilds past states of workflows from an event store.

    Args:
        store: The event store that recorded the workflows.
    """

    def __init__(self, store: EventSource) -> None:
        self.store = store

    def rebuild_workflow_state(
        self, workflow_id: str, as_of_sequence: int | None = None
    ) -> ReplayedWorkflow:
        """The workflow as it was right after event ``as_of_sequence`` (default: the last).

        The result is a :class:`~stabilize.models.workflow.Workflow` that also answers the
        keys of the original package's dict (``state["status"]``, ``state["stages"]``, ...;
        see :class:`ReplayedWorkflow`).

        Raises:
            ReplayError: the log has no ``workflow.created`` for this workflow.
        """
        workflow, stages = self._documents(workflow_id, as_of_sequence)
        built = [StageExecution.from_dict(s) for s in stages.values()]
        rebuilt = ReplayedWorkflow.from_dict(workflow, built, version=0)
        assert isinstance(rebuilt, ReplayedWorkflow)
        return rebuilt

    def time_travel_query(
        self, workflow_id: str, stage_ref_id: str, as_of_sequence: int
    ) -> dict[str, Any]:
        """A stage's row (status, context, outputs, tasks) as it was at ``as_of_sequence``.

        Raises:
            ReplayError: the log has no such workflow or stage.
        """
        _, stages = self._documents(workflow_id, as_of_sequence)
        for stage in stages.values():
            if stage["ref_id"] == stage_ref_id:
                return stage
        raise ReplayError(f"workflow {workflow_id} had no stage {stage_ref_id!r} at that point")

    def get_entity_history(self, workflow_id: str, entity_id: str) -> list[Event]:
        """Every event about one stage or task (by id), and the state changes touching it."""
        found = []
        for event in self.store.get_events(workflow_id):
            stages = event.data.get("stages", {}) if event.event_type == "state.changed" else {}
            if (
                event.entity_id == entity_id
                or event.data.get("stage_id") == entity_id
                or entity_id in stages
            ):
                found.append(event)
        return found

    def compare_states(self, workflow_id: str, sequence_a: int, sequence_b: int) -> dict[str, Any]:
        """What changed between two points: a diff of the workflow and of each stage."""
        wf_a, stages_a = self._documents(workflow_id, sequence_a)
        wf_b, stages_b = self._documents(workflow_id, sequence_b)
        changes: dict[str, Any] = {}
        if workflow_diff := diff(wf_a, wf_b):
            changes["workflow"] = workflow_diff
        stage_changes = {}
        for stage_id, after in stages_b.items():
            before = stages_a.get(stage_id, {})
            if stage_diff := diff(before, after):
                stage_changes[after["ref_id"]] = stage_diff
        if stage_changes:
            changes["stages"] = stage_changes
        return changes

    def _documents(
        self, workflow_id: str, as_of: int | None
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        workflow: dict[str, Any] | None = None
        stages: dict[str, dict[str, Any]] = {}
        for event in self.store.get_events(workflow_id):
            if as_of is not None and event.sequence > as_of:
                break
            if event.event_type == EventType.WORKFLOW_CREATED:
                workflow = dict(event.data["workflow"])
                stages = {s["id"]: dict(s) for s in event.data["stages"]}
            elif event.event_type == "state.changed" and workflow is not None:
                change = event.data
                if "workflow" in change:
                    workflow = apply(workflow, change["workflow"])
                for stage_id, stage_change in change.get("stages", {}).items():
                    stages[stage_id] = apply(stages.get(stage_id, {}), stage_change)
                for added in change.get("added", []):
                    stages[added["id"]] = dict(added)
        if workflow is None:
            raise ReplayError(
                f"no workflow.created event for workflow {workflow_id}: was event recording "
                "on when it was stored?"
            )
        # Rows are stored without the fields at their defaults: answer with every field.
        full = {key: StageExecution.from_dict(row).to_dict() for key, row in stages.items()}
        return workflow, full
