"""Structured loops built on ``jump_to``: repeat-until and while, with a bound.

Both helpers return plain stages to put in ``Workflow.create``; the loop is run by the
built-in ``loop`` task (:class:`LoopTask`), so a loop survives crashes like any other
stage. Each iteration is one jump, and the loop's ``max_iterations`` is added to the
workflow's jump bound, so loops do not eat the ``_max_jumps`` budget of other jumps.

Conditions are expressions (:mod:`stabilize.expressions`) evaluated against the check
stage's task context: the outputs of every stage before it, the body included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stabilize.errors import InvalidStageGraphError
from stabilize.expressions import compile_expression, is_true
from stabilize.models.loop import LoopConfig, LoopMode
from stabilize.models.stage import StageExecution
from stabilize.models.task import KEPT_STATE_KEY, TaskExecution
from stabilize.tasks.interface import Task
from stabilize.tasks.result import TaskResult

LOOP_TASK = "loop"


class LoopTask(Task):
    """Decides whether a structured loop runs again (registered as ``loop``).

    Reads the check stage's ``loop`` settings (:class:`~stabilize.models.LoopConfig`):
    its ``mode`` (``until``: check after the body, jump back while false; ``while``:
    check before the body, skip to the exit once false; ``next``: the end of a while
    body, always go back to the check), ``condition``, ``max_iterations``, ``target`` and
    ``fail_when_exhausted``. Outputs ``<ref_id>_iterations`` and
    ``<ref_id>_condition_met``.

    A while loop's guard learns its iteration, and what the last iteration produced, from
    the jump of ``<ref_id>_next``: they are its task's state, under ``kept`` (a loop
    around the loop resets the guard but keeps them, as the jump counts are kept).
    """

    def execute(self, stage: StageExecution) -> TaskResult:
        """Evaluate the loop's condition and jump, or let the workflow go on.

        Args:
            stage: The loop's check stage, its ``loop`` set by `repeat_until` or
                `while_loop`.

        Returns:
            A jump back into the loop, a success (with ``<ref_id>_iterations`` and
            ``<ref_id>_condition_met``) or jump to the exit, or TERMINAL when
            ``fail_when_exhausted`` is set and the bound was reached, or when the stage
            has no ``loop`` settings.
        """
        loop = stage.loop
        ref = stage.ref_id
        if loop is None:
            return TaskResult.terminal(
                f"stage {ref!r} runs the loop task but has no loop settings (build it "
                "with repeat_until or while_loop)"
            )
        ctx = stage.context
        limit = loop.max_iterations
        # What the iteration produced travels back with the jump: the next iteration
        # (and a while loop's check) sees it.
        carried = {k: v for k, v in ctx.items() if not k.startswith("_")}
        if loop.mode == "next":
            iteration = stage.jump_count + 1
            handed = {"iteration": iteration + 1, "carry": carried}
            return TaskResult.jump_to(loop.target, state={KEPT_STATE_KEY: handed})
        kept = stage.task_state.get(KEPT_STATE_KEY) or {}
        carry: dict[str, Any] = kept.get("carry") or {}
        env = {**ctx, **carry}
        # A while guard learns its iteration from <ref_id>_next's jump; a check jumps itself.
        iteration = int(kept.get("iteration", 1)) if loop.mode == "while" else stage.jump_count + 1
        met = is_true(loop.condition, env)
        keep_going = (not met) if loop.mode == "until" else met
        if loop.mode == "until" and keep_going and iteration < limit:
            return TaskResult.jump_to(loop.target, context=carried)
        if loop.mode == "while" and keep_going and iteration <= limit:
            return TaskResult.success(outputs={**carry, f"{ref}_iterations": iteration - 1})
        done = iteration if loop.mode == "until" else iteration - 1
        outputs = {
            **carry,
            f"{ref}_iterations": done,
            f"{ref}_condition_met": not keep_going,
        }
        if keep_going and loop.fail_when_exhausted:
            return TaskResult.terminal(
                f"loop {ref!r} reached max_iterations={limit} without its condition being met"
            )
        if loop.mode == "while":
            return TaskResult.jump_to(loop.target, outputs=outputs)
        return TaskResult.success(outputs=outputs)


def repeat_until(
    ref_id: str,
    body: Sequence[StageExecution],
    until: str,
    max_iterations: int,
    requisite_stage_ref_ids: Iterable[str] = (),
    fail_when_exhausted: bool = False,
) -> list[StageExecution]:
    """A do-while loop: run ``body``, then stop once ``until`` holds.

    Args:
        ref_id: The ``ref_id`` of the check stage that ends the loop; later stages
            depend on it.
        body: The stages of one iteration, wired among themselves; exactly one of them
            has no requisite inside the body (the entry).
        until: The exit condition, evaluated after each iteration.
        max_iterations: The most iterations; then the loop ends anyway.
        requisite_stage_ref_ids: What the loop's entry waits for.
        fail_when_exhausted: End TERMINAL instead when the condition never held.

    Returns:
        The body stages followed by the check stage.

    Raises:
        InvalidStageGraphError: ``max_iterations`` is below 1, ``body`` is empty or has
            not exactly one entry stage (``kind="bad_loop"``).
        ExpressionError: ``until`` is not a valid expression.
    """
    entry, sinks = _wire(ref_id, body, max_iterations, until, requisite_stage_ref_ids)
    check = _loop_stage(ref_id, sinks, "until", until, max_iterations, entry, fail_when_exhausted)
    return [*body, check]


def while_loop(
    ref_id: str,
    body: Sequence[StageExecution],
    condition: str,
    max_iterations: int,
    requisite_stage_ref_ids: Iterable[str] = (),
    fail_when_exhausted: bool = False,
) -> list[StageExecution]:
    """A while loop: check ``condition`` before each iteration of ``body``.

    When the condition is false at once, the body is skipped.

    Args:
        ref_id: The ``ref_id`` of the check stage; also the prefix of the two stages
            added (``<ref_id>_next``, ``<ref_id>_done``).
        body: The stages of one iteration, wired among themselves; exactly one of them
            has no requisite inside the body (the entry).
        condition: The condition to keep going, evaluated before each iteration.
        max_iterations: The most iterations; then the loop ends anyway.
        requisite_stage_ref_ids: What the check stage waits for.
        fail_when_exhausted: End TERMINAL instead when the condition still held after
            ``max_iterations``.

    Returns:
        The check stage (``ref_id``), the body, a ``<ref_id>_next`` stage that goes back
        to the check, and a ``<ref_id>_done`` stage where the loop exits; later stages
        depend on ``<ref_id>_done``.

    Raises:
        InvalidStageGraphError: ``max_iterations`` is below 1, ``body`` is empty or has
            not exactly one entry stage (``kind="bad_loop"``).
        ExpressionError: ``condition`` is not a valid expression.
    """
    entry, sinks = _wire(ref_id, body, max_iterations, condition, [ref_id])
    done_ref = f"{ref_id}_done"
    guard = _loop_stage(
        ref_id,
        set(requisite_stage_ref_ids),
        "while",
        condition,
        max_iterations,
        done_ref,
        fail_when_exhausted,
    )
    back = _loop_stage(f"{ref_id}_next", sinks, "next", "true", 0, ref_id, False)
    done = StageExecution(
        ref_id=done_ref,
        type="noop",
        name=f"{ref_id} done",
        requisite_stage_ref_ids={back.ref_id},
        tasks=[TaskExecution.create(done_ref, "noop", stage_start=True, stage_end=True)],
    )
    _ = entry
    return [guard, *body, back, done]


def _wire(
    ref_id: str,
    body: Sequence[StageExecution],
    max_iterations: int,
    condition: str,
    requisites: Iterable[str],
) -> tuple[str, set[str]]:
    if max_iterations < 1:
        raise InvalidStageGraphError(
            f"loop {ref_id!r}: max_iterations must be at least 1", kind="bad_loop", ref_id=ref_id
        )
    if not body:
        raise InvalidStageGraphError(f"loop {ref_id!r} has no body", kind="bad_loop", ref_id=ref_id)
    compile_expression(condition)
    refs = {s.ref_id for s in body}
    entries = [s for s in body if not (s.requisite_stage_ref_ids & refs)]
    if len(entries) != 1:
        raise InvalidStageGraphError(
            f"loop {ref_id!r}: the body needs exactly one entry stage, found "
            f"{sorted(s.ref_id for s in entries)}",
            kind="bad_loop",
            ref_id=ref_id,
        )
    entries[0].requisite_stage_ref_ids |= set(requisites)
    required = {r for s in body for r in s.requisite_stage_ref_ids}
    sinks = {s.ref_id for s in body if s.ref_id not in required}
    return entries[0].ref_id, sinks


def _loop_stage(
    ref_id: str,
    requisites: set[str],
    mode: LoopMode,
    condition: str,
    max_iterations: int,
    target: str,
    fail_when_exhausted: bool,
) -> StageExecution:
    return StageExecution(
        ref_id=ref_id,
        type=LOOP_TASK,
        name=f"loop {ref_id}",
        requisite_stage_ref_ids=set(requisites),
        loop=LoopConfig(mode, condition, max_iterations, target, fail_when_exhausted),
        tasks=[TaskExecution.create(ref_id, LOOP_TASK, stage_start=True, stage_end=True)],
    )
