"""The stage model: a node of the workflow graph that runs one or more tasks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from stabilize.models._legacy import upgrade_stage_row
from stabilize.models.loop import LoopConfig
from stabilize.models.status import WorkflowStatus, as_member
from stabilize.models.task import TaskExecution, new_id

if TYPE_CHECKING:
    from stabilize.cancellation import CancellationToken
    from stabilize.models.workflow import Workflow


class JoinType(StrEnum):
    """When a stage with several requisites may start.

    ``AND``: every requisite finished (requisites on branches not taken count as finished).
    ``OR``: the requisites on activated branches finished (the same rule, stated for
    conditional splits). ``N_OF_M``: ``join_threshold`` requisites succeeded.
    ``DISCRIMINATOR``: the first requisite succeeded. ``MULTI_MERGE``: once per requisite
    that succeeds.
    """

    AND = "AND"
    OR = "OR"
    N_OF_M = "N_OF_M"
    DISCRIMINATOR = "DISCRIMINATOR"
    MULTI_MERGE = "MULTI_MERGE"


class SplitType(StrEnum):
    """How a stage activates its downstream stages.

    ``AND``: all of them. ``OR``: those whose ``split_conditions`` entry holds (stages
    without an entry are always activated); the others end SKIPPED as not taken.
    """

    AND = "AND"
    OR = "OR"


class StragglerPolicy(StrEnum):
    """What happens to a join's requisites still running when an N_OF_M join fires.

    (The same holds for a DISCRIMINATOR join.)
    ``IGNORE`` (default): they run to completion and are ignored. ``CANCEL``: they are
    canceled (running tasks are asked to stop). ``MERGE``: they run to completion and their
    outputs are folded into the join's outputs through its ``output_reducers``.
    """

    IGNORE = "ignore"
    CANCEL = "cancel"
    MERGE = "merge"


# Keys the original package documented in the stage context (issue 18 keeps them there)
# whose values belong to one run of the stage: the delivered signal, which the engine
# writes and tasks read, and the child a SubWorkflowTask started.
_ONE_RUN_CONTEXT_KEYS = ("_signal_name", "_signal_data", "_sub_workflow_id")


@dataclass
class MultiInstanceConfig:
    """Run a stage once per item of a list known only at run time (dynamic fan-out).

    Attributes:
        items_key: The key of the stage's task context (its own context or an upstream
            output) that holds the list.
        item_key: The context key under which each instance sees its item (an instance's
            task does not see the whole list at ``items_key``).
        max_concurrency: The most instances running at once (0: no limit).
        join_threshold: The stage completes when this many instances succeeded (0: all);
            instances still running then are canceled, those not started withdrawn.
    """

    items_key: str
    item_key: str = "item"
    max_concurrency: int = 0
    join_threshold: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "items_key": self.items_key,
            "item_key": self.item_key,
            "max_concurrency": self.max_concurrency,
            "join_threshold": self.join_threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultiInstanceConfig:
        """Rebuild from :meth:`to_dict` output.

        Args:
            data: What :meth:`to_dict` returned.

        Returns:
            The configuration.

        Raises:
            KeyError: ``data`` lacks ``items_key``.
        """
        return cls(
            items_key=data["items_key"],
            item_key=data.get("item_key", "item"),
            max_concurrency=data.get("max_concurrency", 0),
            join_threshold=data.get("join_threshold", 0),
        )


_ABSENT = object()
"""Stands for a key the fan-out stage's context lacks (any value differs from it)."""

DEAD_REASONS = frozenset({"branch_not_taken", "withdrawn"})
"""``status_reason`` values of a SKIPPED stage that also skip the path behind it."""


@dataclass(eq=False)
class StageExecution:
    """A stage of a workflow.

    ``context`` holds the stage's own configuration and whatever its tasks add to it;
    ``outputs`` holds what its tasks publish. A task sees the outputs of every ancestor
    merged under the stage's own context (see :meth:`Workflow.task_context`).

    The control-flow fields (``join_type``, ``join_threshold``, ``split_type``,
    ``split_conditions``, ``output_reducers``, ``straggler_policy``, ``deadline_seconds``
    with ``deadline_route``, ``cancel_region``, ``mutex_key``, ``deferred_choice_group``,
    ``milestone_ref_id`` with ``milestone_status``, ``mi_config``, ``loop``) are part of
    the definition;
    ``status_reason``, ``branches_not_taken``, ``multi_merge_pending``, ``mutex_held``,
    ``pending_signals``, ``jump_count``, ``signal_user``, ``mi_generation`` and
    ``mi_index`` are kept by the engine, never in ``context``, which holds only what the
    user and the tasks put there (and the keys the original package documented there:
    ``_signal_name``, ``_signal_data``, the ``_sub_workflow_*`` keys).
    """

    id: str = field(default_factory=new_id)
    ref_id: str = ""
    type: str = ""
    name: str = ""
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    context: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskExecution] = field(default_factory=list)
    requisite_stage_ref_ids: set[str] = field(default_factory=set)
    parent_stage_id: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    version: int = 0
    join_type: JoinType = JoinType.AND
    join_threshold: int = 0
    split_type: SplitType = SplitType.AND
    split_conditions: dict[str, Any] = field(default_factory=dict)
    output_reducers: dict[str, str] = field(default_factory=dict)
    straggler_policy: StragglerPolicy = StragglerPolicy.IGNORE
    status_reason: str | None = None
    branches_not_taken: list[str] = field(default_factory=list)
    multi_merge_pending: int = 0
    deadline_seconds: float | None = None
    deadline_route: str | None = None
    cancel_region: str | None = None
    mutex_key: str | None = None
    mutex_held: bool = False
    deferred_choice_group: str | None = None
    milestone_ref_id: str | None = None
    milestone_status: WorkflowStatus = WorkflowStatus.RUNNING
    pending_signals: list[dict[str, Any]] = field(default_factory=list)
    mi_config: MultiInstanceConfig | None = None
    loop: LoopConfig | None = None
    """The settings of a structured loop's check stage (set by ``repeat_until`` and
    ``while_loop``, read by the ``loop`` task); ``None`` for every other stage."""
    jump_count: int = 0
    """How many ``jump_to`` redirects this stage took; kept when a loop resets the stage."""
    signal_user: str | None = None
    """Who sent the signal delivered last (its name and data are the context's
    ``_signal_name`` and ``_signal_data``); cleared when the stage is reset."""
    mi_generation: str | None = None
    """On a dynamic fan-out stage (``mi_config``): the prefix of the ids of its current
    run's instances."""
    mi_index: int | None = None
    """On an instance of a dynamic fan-out: the position of its item in the list."""
    _workflow: Workflow | None = field(default=None, repr=False, compare=False)
    _progress: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    _attempt_key: str | None = field(default=None, repr=False, compare=False)
    _cancel_token: CancellationToken | None = field(default=None, repr=False, compare=False)
    # On the copy a task receives: the id of that task (see task_state).
    _task_id: str | None = field(default=None, repr=False, compare=False)
    _clock: Callable[[], float] | None = field(default=None, repr=False, compare=False)
    _own_keys: frozenset[str] | None = field(default=None, repr=False, compare=False)
    # The row as last written or read (JSON), the baseline of the diff that records what
    # the next transition changes (see Transaction.save).
    _written: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Accept any iterable (lists are common in user code) but keep a set, as the spec shows.
        requisites: Any = self.requisite_stage_ref_ids
        if not isinstance(requisites, set):
            self.requisite_stage_ref_ids = set(_as_iterable(requisites))
        self.join_type = as_member(JoinType, self.join_type)
        self.milestone_status = as_member(WorkflowStatus, self.milestone_status)
        self.split_type = as_member(SplitType, self.split_type)
        self.straggler_policy = as_member(StragglerPolicy, self.straggler_policy)

    @classmethod
    def for_task(
        cls,
        ref_id: str,
        task: str,
        *,
        name: str | None = None,
        context: dict[str, Any] | None = None,
        requisite_stage_ref_ids: Iterable[str] = (),
        **fields: Any,
    ) -> StageExecution:
        """A stage that runs one task: ``StageExecution.for_task("greet", "greet")``.

        The same as spelling out ``tasks=[TaskExecution.create(ref_id, task)]``. (A stage
        built with no tasks stays what it is: a step that succeeds at once, as joins and
        markers use.)

        Args:
            ref_id: The stage's id within the workflow (also its task's name).
            task: The task type to run, as registered (``implementing_class``); also the
                stage's ``type``.
            name: A human-readable name (default: ``ref_id``).
            context: The stage's configuration.
            requisite_stage_ref_ids: The stages this one runs after.
            **fields: Any other :class:`StageExecution` field (``join_type``, ...).
        """
        return cls(
            ref_id=ref_id,
            type=fields.pop("type", task),
            name=name if name is not None else ref_id,
            context=dict(context or {}),
            requisite_stage_ref_ids=set(requisite_stage_ref_ids),
            tasks=[TaskExecution.create(ref_id, task, stage_start=True, stage_end=True)],
            **fields,
        )

    @property
    def is_dead(self) -> bool:
        """True when the stage was skipped as part of a path that is not taken."""
        return self.status is WorkflowStatus.SKIPPED and self.status_reason in DEAD_REASONS

    def update_outputs(self, values: Mapping[str, Any]) -> None:
        """Add ``values`` to the stage's outputs, which later stages see in their context.

        The engine's way to change a stage's outputs (a task returns them in its
        :class:`~stabilize.TaskResult`): it keeps the workflow's cached merge of upstream
        outputs (:meth:`Workflow.task_context`) current.

        Args:
            values: The keys to add or replace.
        """
        if values:
            self.outputs.update(values)
            self._outputs_changed()

    def _outputs_changed(self) -> None:
        wf = self._workflow
        if wf is not None and wf._index is not None:
            wf._index.outputs_changed(self.ref_id)

    @property
    def execution(self) -> Workflow:
        """The workflow this stage belongs to."""
        if self._workflow is None:
            raise RuntimeError(f"stage {self.ref_id!r} is not attached to a workflow")
        return self._workflow

    @property
    def workflow_id(self) -> str | None:
        """The id of the workflow this stage belongs to, if attached."""
        return self._workflow.id if self._workflow is not None else None

    @property
    def idempotency_key(self) -> str:
        """A key for the task execution that received this stage, stable across re-runs.

        It names the workflow, stage, task and transient-retry attempt, so an execution
        interrupted by a crash runs again with the same key: pass it to external services
        to make their side effects happen once.
        """
        if self._attempt_key is None:
            raise RuntimeError("idempotency_key exists only on the stage a task receives")
        return self._attempt_key

    @property
    def task_state(self) -> dict[str, Any]:
        """The durable state of the task running with this stage (``TaskExecution.state``).

        On the copy a task receives, the state its last committed execution returned
        (``TaskResult.running(state=...)``): a task changes it by returning a new one,
        never in place. On a stage built by hand, the state of its RUNNING task, or an
        empty dict when none runs.
        """
        for task in self.tasks:
            if task.id == self._task_id or (
                self._task_id is None and task.status is WorkflowStatus.RUNNING
            ):
                return task.state
        return {}

    def own_context(self) -> dict[str, Any]:
        """The keys the stage itself set, without those inherited from its ancestors.

        On the copy a task receives, ``context`` also holds every ancestor's outputs;
        built-in tasks read their configuration from here so that an upstream output
        named like a setting (``headers``, ``body``) cannot change a request.
        """
        if self._own_keys is None:
            return dict(self.context)
        return {k: v for k, v in self.context.items() if k in self._own_keys}

    def upstream_stages(self) -> list[StageExecution]:
        """The stages this stage directly depends on, in declaration order."""
        wf = self.execution
        return [s for s in wf.stages if s.ref_id in self.requisite_stage_ref_ids]

    def downstream_stages(self) -> list[StageExecution]:
        """The stages that directly depend on this stage, in declaration order."""
        return [s for s in self.execution.stages if self.ref_id in s.requisite_stage_ref_ids]

    def task_by_id(self, task_id: str) -> TaskExecution:
        """Return the task with this id.

        Args:
            task_id: The task's id.

        Returns:
            The task.

        Raises:
            KeyError: The stage has no task with this id, naming both.
        """
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(f"stage {self.ref_id!r} has no task {task_id!r}")

    def reset(self) -> None:
        """Return the stage and its tasks to NOT_STARTED (used by jumps and restarts).

        The next run starts without the last one's state: the signal delivered to it
        (``signal_user`` and the context's ``_signal_name`` and ``_signal_data``), the
        child of a sub-workflow (``_sub_workflow_id``) and what its tasks kept in their
        ``state`` (but its ``"kept"`` entry). The rest of the context, ``jump_count`` and a
        loop's settings stay.
        """
        for key in _ONE_RUN_CONTEXT_KEYS:
            self.context.pop(key, None)
        self.signal_user = None
        self.status = WorkflowStatus.NOT_STARTED
        self.start_time = None
        self.end_time = None
        if self.outputs:
            self.outputs = {}
            self._outputs_changed()
        self.status_reason = None
        self.branches_not_taken = []
        self.multi_merge_pending = 0
        self.pending_signals = []
        for task in self.tasks:
            task.reset()

    def _head(self) -> dict[str, Any]:
        """The fields every form of the stage starts with (:meth:`to_dict`, :meth:`to_row`)."""
        return {
            "id": self.id,
            "ref_id": self.ref_id,
            "type": self.type,
            "name": self.name,
            "status": self.status.value,
            "context": self.context,
            "outputs": self.outputs,
        }

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the stage (tasks included)."""
        return {
            **self._head(),
            "tasks": [t.to_dict() for t in self.tasks],
            "requisite_stage_ref_ids": sorted(self.requisite_stage_ref_ids),
            "parent_stage_id": self.parent_stage_id,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "version": self.version,
            "join_type": self.join_type.value,
            "join_threshold": self.join_threshold,
            "split_type": self.split_type.value,
            "split_conditions": self.split_conditions,
            "output_reducers": self.output_reducers,
            "straggler_policy": self.straggler_policy.value,
            "status_reason": self.status_reason,
            "branches_not_taken": self.branches_not_taken,
            "multi_merge_pending": self.multi_merge_pending,
            "deadline_seconds": self.deadline_seconds,
            "deadline_route": self.deadline_route,
            "cancel_region": self.cancel_region,
            "mutex_key": self.mutex_key,
            "mutex_held": self.mutex_held,
            "deferred_choice_group": self.deferred_choice_group,
            "milestone_ref_id": self.milestone_ref_id,
            "milestone_status": self.milestone_status.value,
            "pending_signals": self.pending_signals,
            "mi_config": self.mi_config.to_dict() if self.mi_config is not None else None,
            "loop": self.loop.to_dict() if self.loop is not None else None,
            "jump_count": self.jump_count,
            "signal_user": self.signal_user,
            "mi_generation": self.mi_generation,
            "mi_index": self.mi_index,
        }

    def to_row(self) -> dict[str, Any]:
        """The stage as stored: :meth:`to_dict` without the fields at their defaults.

        :meth:`from_dict` reads either form. Most stages use few of the control-flow
        fields, so the stored rows (and the event log's diffs of them) stay less than half
        the size, and writing, reading and diffing them costs less.

        An instance of a dynamic fan-out (attached to its workflow) stores only the
        context keys that are its own: its item and what its tasks set, not the values it
        shares with its fan-out stage, which a workflow built from the rows layers back
        under them (issue 19: every instance carried the whole list of items).
        """
        row = self._head()
        inherited = self._fan_out_context()
        if inherited is not None:
            row["context"] = {
                k: v for k, v in self.context.items() if inherited.get(k, _ABSENT) is not v
            }
        row["tasks"] = [t.to_row() for t in self.tasks]
        row["start_time"] = self.start_time
        row["end_time"] = self.end_time
        if self.requisite_stage_ref_ids:
            row["requisite_stage_ref_ids"] = sorted(self.requisite_stage_ref_ids)
        if self.parent_stage_id is not None:
            row["parent_stage_id"] = self.parent_stage_id
        if self.version:
            row["version"] = self.version
        if self.join_type is not JoinType.AND:
            row["join_type"] = self.join_type.value
        if self.join_threshold:
            row["join_threshold"] = self.join_threshold
        if self.split_type is not SplitType.AND:
            row["split_type"] = self.split_type.value
        if self.split_conditions:
            row["split_conditions"] = self.split_conditions
        if self.output_reducers:
            row["output_reducers"] = self.output_reducers
        if self.straggler_policy is not StragglerPolicy.IGNORE:
            row["straggler_policy"] = self.straggler_policy.value
        optional = (
            ("status_reason", self.status_reason),
            ("deadline_seconds", self.deadline_seconds),
            ("deadline_route", self.deadline_route),
            ("cancel_region", self.cancel_region),
            ("mutex_key", self.mutex_key),
            ("deferred_choice_group", self.deferred_choice_group),
            ("milestone_ref_id", self.milestone_ref_id),
            ("signal_user", self.signal_user),
            ("mi_generation", self.mi_generation),
            ("mi_index", self.mi_index),
        )
        for key, value in optional:
            if value is not None:
                row[key] = value
        if self.branches_not_taken:
            row["branches_not_taken"] = self.branches_not_taken
        if self.multi_merge_pending:
            row["multi_merge_pending"] = self.multi_merge_pending
        if self.mutex_held:
            row["mutex_held"] = True
        if self.milestone_status is not WorkflowStatus.RUNNING:
            row["milestone_status"] = self.milestone_status.value
        if self.pending_signals:
            row["pending_signals"] = self.pending_signals
        if self.mi_config is not None:
            row["mi_config"] = self.mi_config.to_dict()
        if self.loop is not None:
            row["loop"] = self.loop.to_dict()
        if self.jump_count:
            row["jump_count"] = self.jump_count
        return row

    def _fan_out_context(self) -> dict[str, Any] | None:
        """The context of the fan-out stage this stage is an instance of, if attached.

        Only a value that is the very object the fan-out stage holds counts as shared
        (loading layers that same value back); what a task set arrives as a new object and
        stays the instance's own, even when equal (an O(1) test per key, where comparing
        values would cost as much as the list they hold).
        """
        if self.mi_index is None or self.parent_stage_id is None or self._workflow is None:
            return None
        parent = self._workflow.index.by_id.get(self.parent_stage_id)
        return parent.context if parent is not None and parent.mi_config is not None else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageExecution:
        """Rebuild a stage from :meth:`to_dict` output.

        Rows of earlier versions, which kept the engine's bookkeeping in the context, are
        read into the typed fields (see :mod:`stabilize.models._legacy`).

        Args:
            data: What :meth:`to_dict` (or :meth:`to_row`) returned.

        Returns:
            The stage, not yet attached to a workflow.

        Raises:
            KeyError: ``data`` lacks ``id``, ``ref_id`` or ``status``.
            ValueError: ``data`` names an unknown status, split type or straggler policy.
        """
        data = upgrade_stage_row(data)
        return cls(
            id=data["id"],
            ref_id=data["ref_id"],
            type=data.get("type", ""),
            name=data.get("name", ""),
            status=as_member(WorkflowStatus, data["status"]),
            context=data.get("context") or {},
            outputs=data.get("outputs") or {},
            tasks=[TaskExecution.from_dict(t) for t in data.get("tasks") or []],
            requisite_stage_ref_ids=set(data.get("requisite_stage_ref_ids") or []),
            parent_stage_id=data.get("parent_stage_id"),
            start_time=data.get("start_time"),
            end_time=data.get("end_time"),
            version=data.get("version", 0),
            join_type=as_member(JoinType, data.get("join_type", "AND")),
            join_threshold=data.get("join_threshold", 0),
            split_type=as_member(SplitType, data.get("split_type", "AND")),
            split_conditions=data.get("split_conditions") or {},
            output_reducers=data.get("output_reducers") or {},
            straggler_policy=as_member(StragglerPolicy, data.get("straggler_policy", "ignore")),
            status_reason=data.get("status_reason"),
            branches_not_taken=list(data.get("branches_not_taken") or []),
            multi_merge_pending=data.get("multi_merge_pending", 0),
            deadline_seconds=data.get("deadline_seconds"),
            deadline_route=data.get("deadline_route"),
            cancel_region=data.get("cancel_region"),
            mutex_key=data.get("mutex_key"),
            mutex_held=data.get("mutex_held", False),
            deferred_choice_group=data.get("deferred_choice_group"),
            milestone_ref_id=data.get("milestone_ref_id"),
            milestone_status=as_member(WorkflowStatus, data.get("milestone_status", "RUNNING")),
            pending_signals=list(data.get("pending_signals") or []),
            mi_config=MultiInstanceConfig.from_dict(data["mi_config"])
            if data.get("mi_config")
            else None,
            loop=LoopConfig.from_dict(data["loop"]) if data.get("loop") else None,
            jump_count=data.get("jump_count", 0),
            signal_user=data.get("signal_user"),
            mi_generation=data.get("mi_generation"),
            mi_index=data.get("mi_index"),
        )


def _as_iterable(value: Iterable[str] | str | None) -> Iterable[str]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return value
