"""Stage rows written before the engine's bookkeeping left the stage context (issue 18).

Earlier versions kept the engine's state in ``stage.context`` under private keys. It now
lives in typed fields of the stage and in the state of its tasks. Migration 0004 converts
the stored rows; :func:`upgrade_stage_row` reads, by the same rules, the rows it cannot
reach: the event log recorded before it (replay), definitions copied into a
``_sub_workflow_config``, exports. Change the rules here and in both migrations together.

The rules, for a stage row whose context holds old keys:

- ``_jump_count``, ``_signal_user``, ``_mi_generation``, ``_mi_index`` become the fields
  ``jump_count``, ``signal_user``, ``mi_generation``, ``mi_index``;
- the ``_loop_*`` settings of a check stage become ``loop`` (a :class:`LoopConfig`);
- ``_signal_timeout_seconds`` (a suspension's timer, read only when the task returned
  it) is dropped;
- what a task kept between its executions goes into the ``state`` of the stage's last
  task that started (its first task if none did): ``_wait_until`` as ``until``,
  ``_llm_retry`` as ``llm_retry``, an agent's checkpoint (``_agent``) as the state itself
  (or only its step count, under ``kept``, when it belongs to an earlier run of the
  stage), a loop's ``_loop_iteration`` and ``_loop_carry`` under ``kept``.

A typed field already set wins over an old key (a log that spans the migration).
"""

from __future__ import annotations

from typing import Any

from stabilize.models.task import KEPT_STATE_KEY as KEPT

_FIELDS = {
    "_jump_count": "jump_count",
    "_signal_user": "signal_user",
    "_mi_generation": "mi_generation",
    "_mi_index": "mi_index",
}
_LOOP = {
    "_loop_mode": "mode",
    "_loop_condition": "condition",
    "_loop_max_iterations": "max_iterations",
    "_loop_target": "target",
    "_loop_fail_when_exhausted": "fail_when_exhausted",
}
_DROPPED = ("_signal_timeout_seconds",)
_TASK_KEYS = ("_agent", "_wait_until", "_llm_retry", "_loop_iteration", "_loop_carry")

LEGACY_KEYS = frozenset({*_FIELDS, *_LOOP, *_DROPPED, *_TASK_KEYS})
"""The context keys that older versions wrote for the engine and its built-in tasks."""


def upgrade_stage_row(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a stage's ``to_dict`` or ``to_row`` form) with the old context keys moved.

    Args:
        data: A stage row, in any form a version of stabilize wrote.

    Returns:
        ``data`` itself when its context holds none of :data:`LEGACY_KEYS`, else a copy in
        the current form (``data`` is not changed).
    """
    context = data.get("context")
    if not isinstance(context, dict) or context.keys().isdisjoint(LEGACY_KEYS):
        return data
    row = dict(data)
    context = dict(context)
    row["context"] = context
    for old, new in _FIELDS.items():
        if old in context:
            value = context.pop(old)
            current = row.get(new)
            if new == "jump_count":
                # to_dict writes jump_count even at 0: only a count above it is the new form's.
                if not current:
                    row[new] = _as_int(value)
            elif current is None:
                row[new] = value
    loop = {new: context.pop(old) for old, new in _LOOP.items() if old in context}
    if "target" in loop and row.get("loop") is None:
        row["loop"] = {
            "mode": _default(loop.get("mode"), "until"),
            "condition": _default(loop.get("condition"), ""),
            "max_iterations": _default(loop.get("max_iterations"), 1),
            "target": loop["target"],
            "fail_when_exhausted": bool(loop.get("fail_when_exhausted")),
        }
    for key in _DROPPED:
        context.pop(key, None)
    tasks = row.get("tasks")
    if isinstance(tasks, list) and tasks and not context.keys().isdisjoint(_TASK_KEYS):
        _to_task_state(row, context, tasks)
    return row


def _to_task_state(row: dict[str, Any], context: dict[str, Any], tasks: list[Any]) -> None:
    started = [i for i, t in enumerate(tasks) if t.get("status") != "NOT_STARTED"]
    index = started[-1] if started else 0
    task = dict(tasks[index])
    typed = bool(task.get("state"))
    state: dict[str, Any] = {}
    agent = context.pop("_agent", None)
    if isinstance(agent, dict):
        run = agent.get("run_started")
        if run is None or run == row.get("start_time"):
            state = {k: v for k, v in agent.items() if k != "run_started"}
        state[KEPT] = {"step": _default(agent.get("step"), 0)}
    if "_wait_until" in context:
        state["until"] = context.pop("_wait_until")
    if "_llm_retry" in context:
        state["llm_retry"] = context.pop("_llm_retry")
    if "_loop_iteration" in context or "_loop_carry" in context:
        kept = dict(state.get(KEPT) or {})
        if "_loop_iteration" in context:
            kept["iteration"] = context.pop("_loop_iteration")
        if "_loop_carry" in context:
            kept["carry"] = context.pop("_loop_carry")
        state[KEPT] = kept
    if typed:
        return
    task["state"] = state
    row["tasks"] = [*tasks[:index], task, *tasks[index + 1 :]]


def _default(value: Any, default: Any) -> Any:
    """``value``, or ``default`` when it is missing or null (as SQL's coalesce)."""
    return default if value is None else value


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
