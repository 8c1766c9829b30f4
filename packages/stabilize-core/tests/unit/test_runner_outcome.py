"""to_outcome and snapshot_stage (queue/processor/_runner.py): what user code did -> outcome."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from stabilize.engine.messages import RUN_TASK, ClaimedMessage
from stabilize.errors import PermanentError, TaskTimeoutError, TransientError
from stabilize.models import StageExecution, TaskExecution, Workflow, WorkflowStatus
from stabilize.queue.processor._runner import Finished, InFlight, snapshot_stage, to_outcome
from stabilize.queue.processor.config import QueueProcessorConfig
from stabilize.tasks import NoOpTask, RetryableTask, Task, TaskResult

S = WorkflowStatus
START_MS = 1_000_000
HALF: Callable[[], float] = lambda: 0.5  # noqa: E731 - jitter draw that cancels the jitter


class Poller(RetryableTask):
    """Polls with a fixed backoff and records what the engine told it."""

    def __init__(self, backoff: float = 7.0, timeout: float = 300.0) -> None:
        self.backoff = backoff
        self.limit = timeout
        self.durations: list[timedelta] = []
        self.contexts: list[dict[str, Any]] = []

    def get_timeout(self) -> timedelta:
        return timedelta(seconds=self.limit)

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        self.durations.append(duration)
        self.contexts.append(dict(stage.context))
        return timedelta(seconds=self.backoff)

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.running()


class TimeoutRescue(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success()

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        return TaskResult.success({"rescued": True})


class BrokenTimeoutHook(Task):
    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success()

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        raise RuntimeError("hook broke")


def make_workflow() -> Workflow:
    a = StageExecution(
        ref_id="a",
        name="a",
        tasks=[TaskExecution.create("fetch", "noop")],
        outputs={"shared": "from_a", "deep": {"list": [1, 2]}},
    )
    b = StageExecution(
        ref_id="b",
        name="b",
        requisite_stage_ref_ids={"a"},
        tasks=[TaskExecution.create("first", "noop"), TaskExecution.create("second", "noop")],
        context={"own": 1, "shared": "own_wins", "nested": {"k": [1]}},
        outputs={"b_out": {"x": 1}},
    )
    return Workflow.create(
        "app",
        "wf",
        [a, b],
        trigger={"by": "cron", "payload": {"items": [1]}},
        context={"global": "g", "shared": "from_wf"},
    )


def finished(
    *,
    result: TaskResult | None = None,
    error: BaseException | None = None,
    task: Task | None = None,
    retry_count: int = 0,
    tb: str | None = None,
) -> Finished:
    wf = make_workflow()
    stage = wf.stage_by_ref_id("b")
    task_exec = stage.tasks[0]
    task_exec.retry_count = retry_count
    snapshot = snapshot_stage(wf, stage, task_exec)
    msg = ClaimedMessage(
        id=1,
        kind=RUN_TASK,
        workflow_id=wf.id,
        stage_id=stage.id,
        task_id=task_exec.id,
        payload={},
        attempts=1,
        lease_token=1,
    )
    flight = InFlight(
        msg=msg,
        task=task or NoOpTask(),
        stage=snapshot,
        task_id=task_exec.id,
        retry_count=retry_count,
        first_start_ms=START_MS,
    )
    return Finished(flight, result=result, error=error, tb=tb)


def never_draw() -> float:
    raise AssertionError("no jitter draw expected")


# --- exceptions -------------------------------------------------------------------------------


def test_transient_error_becomes_a_retry_with_backoff_and_context_update() -> None:
    error = TransientError("flaky", context_update={"cursor": 5})
    outcome = to_outcome(finished(error=error, tb="Traceback..."), QueueProcessorConfig(), 0, HALF)
    assert outcome.status is S.RUNNING
    assert outcome.retry is True
    assert outcome.delay_ms == 1000  # base 1 s for the first retry, jitter draw 0.5 -> none
    assert outcome.context == {"cursor": 5}
    assert outcome.error == "flaky"
    assert outcome.error_details == {
        "exception_type": "TransientError",
        "message": "flaky",
        "traceback": "Traceback...",
    }


def test_transient_backoff_grows_with_the_retry_count() -> None:
    config = QueueProcessorConfig(transient_backoff_base_seconds=0.5)
    outcome = to_outcome(finished(error=TransientError("x"), retry_count=3), config, 0, HALF)
    assert outcome.delay_ms == 4000  # 0.5 * 2 ** 3
    assert outcome.retry


def test_transient_backoff_uses_the_jitter_draw() -> None:
    config = QueueProcessorConfig(transient_jitter=0.5)
    outcome = to_outcome(finished(error=TransientError("x")), config, 0, lambda: 0.0)
    assert outcome.delay_ms == 500


def test_retry_after_overrides_the_backoff() -> None:
    error = TransientError("slow down", retry_after=2.5)
    outcome = to_outcome(
        finished(error=error, retry_count=4), QueueProcessorConfig(), 0, never_draw
    )
    assert outcome.retry
    assert outcome.delay_ms == 2500


def test_retry_after_zero_retries_at_once() -> None:
    error = TransientError("now", retry_after=0)
    outcome = to_outcome(finished(error=error), QueueProcessorConfig(), 0, never_draw)
    assert outcome.retry
    assert outcome.delay_ms == 0


def test_stdlib_connection_and_timeout_errors_are_retried() -> None:
    config = QueueProcessorConfig()
    for error in (ConnectionResetError("reset"), TimeoutError("slow")):
        outcome = to_outcome(finished(error=error), config, 0, HALF)
        assert outcome.retry
        assert outcome.status is S.RUNNING
        assert outcome.context == {}
        assert outcome.error_details is not None
        assert outcome.error_details["exception_type"] == type(error).__name__


def test_transient_gives_up_after_max_attempts() -> None:
    config = QueueProcessorConfig(transient_max_attempts=3)
    # third run (two retries so far) raises again: that is the third attempt -> give up
    outcome = to_outcome(finished(error=TransientError("flaky"), retry_count=2), config, 0, HALF)
    assert outcome.status is S.TERMINAL
    assert outcome.retry is False
    assert outcome.error == "task 'first' of stage 'b' gave up after 3 attempts: flaky"
    assert outcome.error_details is not None
    assert outcome.error_details["exception_type"] == "TransientError"
    assert outcome.error_details["message"] == outcome.error
    # one run earlier it still retries
    again = to_outcome(finished(error=TransientError("flaky"), retry_count=1), config, 0, HALF)
    assert again.retry
    assert again.status is S.RUNNING


def test_one_attempt_allowed_means_no_retry() -> None:
    config = QueueProcessorConfig(transient_max_attempts=1)
    outcome = to_outcome(finished(error=TransientError("x")), config, 0, HALF)
    assert outcome.status is S.TERMINAL
    assert "gave up after 1 attempts" in (outcome.error or "")


def test_non_json_context_update_fails_the_task() -> None:
    error = TransientError("x", context_update={"handle": object()})
    outcome = to_outcome(finished(error=error), QueueProcessorConfig(), 0, HALF)
    assert outcome.status is S.TERMINAL
    assert "context_update['handle'] holds a value of type object" in (outcome.error or "")


def test_other_exception_is_terminal_with_its_type_in_the_details() -> None:
    outcome = to_outcome(
        finished(error=ValueError("bad input"), tb="Traceback (most recent call last): ..."),
        QueueProcessorConfig(),
        0,
        never_draw,
    )
    assert outcome.status is S.TERMINAL
    assert outcome.retry is False
    assert outcome.error == "task 'first' of stage 'b' failed: ValueError: bad input"
    assert outcome.error_details == {
        "exception_type": "ValueError",
        "message": outcome.error,
        "traceback": "Traceback (most recent call last): ...",
    }


def test_permanent_error_is_terminal_even_if_it_looks_transient() -> None:
    class PermanentTimeout(PermanentError, TimeoutError):
        pass

    outcome = to_outcome(
        finished(error=PermanentTimeout("no")), QueueProcessorConfig(), 0, never_draw
    )
    assert outcome.status is S.TERMINAL
    assert outcome.error_details is not None
    assert outcome.error_details["exception_type"] == "PermanentTimeout"


def test_long_tracebacks_are_truncated_to_their_end() -> None:
    tb = "x" * 5000 + "END"
    outcome = to_outcome(finished(error=KeyError("k"), tb=tb), QueueProcessorConfig(), 0, HALF)
    assert outcome.error_details is not None
    assert len(outcome.error_details["traceback"]) == 4000
    assert outcome.error_details["traceback"].endswith("END")


def test_timeout_is_terminal_unless_on_timeout_replaces_it() -> None:
    error = TaskTimeoutError("task 'first' of stage 'b' exceeded its timeout of 5s")
    outcome = to_outcome(finished(error=error), QueueProcessorConfig(), 0, never_draw)
    assert outcome.status is S.TERMINAL
    assert outcome.error == "task 'first' of stage 'b' exceeded its timeout of 5s"
    assert outcome.error_details is not None
    assert outcome.error_details["exception_type"] == "TaskTimeoutError"

    # The runner ran on_timeout (hooked) and carries what it returned.
    item = finished(error=error, task=TimeoutRescue())
    item.hooked, item.result = True, TaskResult.success({"rescued": True})
    rescued = to_outcome(item, QueueProcessorConfig(), 0, never_draw)
    assert rescued.status is S.SUCCEEDED
    assert rescued.outputs == {"rescued": True}

    # A hook that returned nothing (or raised) leaves the timeout failure.
    item = finished(error=error, task=TimeoutRescue())
    item.hooked = True
    assert to_outcome(item, QueueProcessorConfig(), 0, never_draw).error == str(error)


def test_to_outcome_never_runs_on_timeout_itself() -> None:
    # It runs inside the commit's transaction: user code must not (DESIGN.md).
    error = TaskTimeoutError("late")
    outcome = to_outcome(
        finished(error=error, task=BrokenTimeoutHook()), QueueProcessorConfig(), 0, never_draw
    )
    assert outcome.status is S.TERMINAL
    assert outcome.error == "late"


# --- results ----------------------------------------------------------------------------------


def test_success_result_is_passed_through() -> None:
    result = TaskResult.success({"o": 1}, {"c": 2})
    outcome = to_outcome(finished(result=result), QueueProcessorConfig(), 0, never_draw)
    assert outcome.status is S.SUCCEEDED
    assert outcome.outputs == {"o": 1}
    assert outcome.context == {"c": 2}
    assert outcome.error is None
    assert outcome.retry is False


def test_jump_result_keeps_its_target() -> None:
    result = TaskResult.jump_to("a", {"again": True})
    outcome = to_outcome(finished(result=result), QueueProcessorConfig(), 0, never_draw)
    assert outcome.status is S.REDIRECT
    assert outcome.target_stage_ref_id == "a"
    assert outcome.context == {"again": True}


def test_failure_without_an_error_gets_one_naming_task_and_stage() -> None:
    outcome = to_outcome(
        finished(result=TaskResult(S.TERMINAL)), QueueProcessorConfig(), 0, never_draw
    )
    assert outcome.status is S.TERMINAL
    assert outcome.error == "task 'first' of stage 'b' ended TERMINAL"
    stopped = to_outcome(finished(result=TaskResult.stopped()), QueueProcessorConfig(), 0, HALF)
    assert stopped.error == "task 'first' of stage 'b' ended STOPPED"


def _cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["again"] = loop
    return loop


def _spoiled(status: S, field: str, value: dict[str, Any]) -> TaskResult:
    """A result that was valid when built and changed afterwards (checked again at use)."""
    result = TaskResult(status)
    setattr(result, field, value)
    return result


@pytest.mark.parametrize(
    ("result", "where"),
    [
        (_spoiled(S.SUCCEEDED, "outputs", {"loop": _cyclic()}), "TaskResult.outputs['loop']"),
        (_spoiled(S.SUCCEEDED, "outputs", {"when": object()}), "TaskResult.outputs['when']"),
        (_spoiled(S.SUCCEEDED, "context", {"bad": {1, 2}}), "TaskResult.context['bad']"),
        (_spoiled(S.RUNNING, "context", {"fn": print}), "TaskResult.context['fn']"),
    ],
    ids=["cyclic-outputs", "outputs", "context", "running-context"],
)
def test_non_json_result_is_terminal_with_a_clear_message(result: TaskResult, where: str) -> None:
    outcome = to_outcome(finished(result=result), QueueProcessorConfig(), 0, never_draw)
    assert outcome.status is S.TERMINAL
    assert outcome.error is not None
    assert outcome.error.startswith(
        f"task 'first' of stage 'b' returned a result that cannot be stored: {where}"
    )
    assert outcome.error_details is not None
    assert outcome.error_details["exception_type"] == "InvalidTaskResultError"
    assert outcome.outputs == {}
    assert outcome.context == {}


def test_running_from_a_plain_task_polls_after_default_poll_seconds() -> None:
    config = QueueProcessorConfig(default_poll_seconds=2.5)
    outcome = to_outcome(
        finished(result=TaskResult.running({"n": 1})), config, START_MS + 10, never_draw
    )
    assert outcome.status is S.RUNNING
    assert outcome.retry is False
    assert outcome.delay_ms == 2500
    assert outcome.context == {"n": 1}


def test_running_from_a_retryable_task_uses_its_backoff_and_elapsed_time() -> None:
    poller = Poller(backoff=7)
    done = finished(result=TaskResult.running({"polls": 3}), task=poller)
    outcome = to_outcome(done, QueueProcessorConfig(), START_MS + 60_000, never_draw)
    assert outcome.status is S.RUNNING
    assert outcome.delay_ms == 7000
    assert outcome.context == {"polls": 3}
    assert poller.durations == [timedelta(seconds=60)]
    # the backoff sees the context the result just set
    assert poller.contexts[0]["polls"] == 3


def test_running_from_a_retryable_task_fails_after_its_overall_timeout() -> None:
    poller = Poller(timeout=300)
    at_limit = to_outcome(
        finished(result=TaskResult.running(), task=poller),
        QueueProcessorConfig(),
        START_MS + 300_000,
        never_draw,
    )
    assert at_limit.status is S.RUNNING
    beyond = to_outcome(
        finished(result=TaskResult.running(), task=poller),
        QueueProcessorConfig(),
        START_MS + 301_000,
        never_draw,
    )
    assert beyond.status is S.TERMINAL
    assert beyond.error == (
        "task 'first' of stage 'b' kept running for 301s, beyond its timeout of 300s"
    )
    assert beyond.error_details is not None
    assert beyond.error_details["exception_type"] == "TaskTimeoutError"


def test_clock_going_backwards_counts_as_no_time_elapsed() -> None:
    poller = Poller()
    to_outcome(
        finished(result=TaskResult.running(), task=poller),
        QueueProcessorConfig(),
        START_MS - 5_000,
        never_draw,
    )
    assert poller.durations == [timedelta(0)]


# --- snapshot_stage ---------------------------------------------------------------------------


def snapshot_of_b() -> tuple[Workflow, StageExecution, StageExecution]:
    wf = make_workflow()
    b = wf.stage_by_ref_id("b")
    return wf, b, snapshot_stage(wf, b, b.tasks[0])


def test_snapshot_context_is_the_merged_task_context() -> None:
    wf, b, copy = snapshot_of_b()
    assert copy.context == wf.task_context(b)
    assert copy.context == {
        "global": "g",
        "shared": "own_wins",
        "deep": {"list": [1, 2]},
        "own": 1,
        "nested": {"k": [1]},
    }
    assert copy.outputs == {"b_out": {"x": 1}}


def test_snapshot_keeps_identity_fields() -> None:
    wf, b, copy = snapshot_of_b()
    assert copy is not b
    assert (copy.id, copy.ref_id, copy.name, copy.status) == (b.id, b.ref_id, b.name, b.status)
    assert copy.requisite_stage_ref_ids == {"a"}
    assert copy.requisite_stage_ref_ids is not b.requisite_stage_ref_ids
    assert [t.id for t in copy.tasks] == [t.id for t in b.tasks]
    assert copy.execution is not wf
    assert copy.execution.id == wf.id
    assert copy.workflow_id == wf.id
    assert copy.execution.context == wf.context


def test_snapshot_idempotency_key_names_workflow_stage_task_and_retry() -> None:
    wf = make_workflow()
    b = wf.stage_by_ref_id("b")
    task = b.tasks[0]
    assert snapshot_stage(wf, b, task).idempotency_key == f"{wf.id}:{b.id}:{task.id}:0"
    task.retry_count = 2
    key = snapshot_stage(wf, b, task).idempotency_key
    assert key == f"{wf.id}:{b.id}:{task.id}:2"
    assert snapshot_stage(wf, b, task).idempotency_key == key  # stable across re-runs
    other = snapshot_stage(wf, b, b.tasks[1]).idempotency_key
    assert other != key


def test_snapshot_changes_do_not_reach_the_engine() -> None:
    wf, b, copy = snapshot_of_b()
    a = wf.stage_by_ref_id("a")
    copy.context["own"] = 99
    copy.context["nested"]["k"].append(2)
    copy.context["deep"]["list"].append(3)
    copy.outputs["b_out"]["x"] = 2
    copy.tasks[0].status = S.TERMINAL
    copy.requisite_stage_ref_ids.add("zzz")
    copy.execution.context["global"] = "changed"
    assert b.context == {"own": 1, "shared": "own_wins", "nested": {"k": [1]}}
    assert a.outputs == {"shared": "from_a", "deep": {"list": [1, 2]}}
    assert b.outputs == {"b_out": {"x": 1}}
    assert b.tasks[0].status is S.NOT_STARTED
    assert b.requisite_stage_ref_ids == {"a"}
    assert wf.context == {"global": "g", "shared": "from_wf"}


def test_snapshot_trigger_changes_do_not_reach_the_engine() -> None:
    wf, _b, copy = snapshot_of_b()
    copy.execution.trigger["by"] = "task"
    copy.execution.trigger["payload"]["items"].append(2)
    assert wf.trigger == {"by": "cron", "payload": {"items": [1]}}


def test_snapshot_does_not_see_later_engine_changes() -> None:
    wf, b, copy = snapshot_of_b()
    b.context["nested"]["k"].append(5)
    wf.stage_by_ref_id("a").outputs["deep"]["list"].append(5)
    wf.context["global"] = "later"
    assert copy.context["nested"] == {"k": [1]}
    assert copy.context["deep"] == {"list": [1, 2]}
    assert copy.context["global"] == "g"
    assert copy.execution.context["global"] == "g"


# --- the engine's fields and the task's state on the copy (issue 18) -------------------------


def test_snapshot_carries_the_engine_fields_a_task_reads_and_its_own_state() -> None:
    from stabilize.models import LoopConfig

    wf = make_workflow()
    b = wf.stage_by_ref_id("b")
    first, second = b.tasks
    first.state = {"polls": 2, "kept": {"runs": 1}}
    second.state = {"other": True}
    b.jump_count, b.signal_user, b.mi_index = 3, "alice", 4
    b.loop = LoopConfig("until", "done", 5, "a")
    copy = snapshot_stage(wf, b, first)
    assert (copy.jump_count, copy.signal_user, copy.mi_index) == (3, "alice", 4)
    assert copy.loop == b.loop
    assert copy.loop is not b.loop
    assert copy.task_state == {"polls": 2, "kept": {"runs": 1}}
    assert snapshot_stage(wf, b, second).task_state == {"other": True}
    copy.task_state["polls"] = 99  # a private copy: only a returned state is kept
    assert first.state == {"polls": 2, "kept": {"runs": 1}}
    assert not any(k.startswith("_") for k in copy.context)


def test_running_result_state_becomes_the_outcome_s_and_the_backoff_sees_it() -> None:
    seen: list[dict[str, Any]] = []

    class Deadline(Poller):
        def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
            seen.append(dict(stage.task_state))
            return timedelta(seconds=float(stage.task_state["until"]))

    outcome = to_outcome(
        finished(result=TaskResult.running(state={"until": 3}), task=Deadline()),
        QueueProcessorConfig(),
        START_MS,
        never_draw,
    )
    assert outcome.status is S.RUNNING
    assert outcome.state == {"until": 3}
    assert outcome.delay_ms == 3000
    assert seen == [{"until": 3}]


def test_a_result_without_state_keeps_it() -> None:
    for result in (TaskResult.running(), TaskResult.success(), TaskResult.suspend()):
        outcome = to_outcome(finished(result=result), QueueProcessorConfig(), START_MS, HALF)
        assert outcome.state is None


def test_suspend_timer_and_jump_state_reach_the_outcome() -> None:
    suspended = to_outcome(
        finished(result=TaskResult.suspend(signal_timeout=2.5, state={"asked": 1})),
        QueueProcessorConfig(),
        START_MS,
        never_draw,
    )
    assert (suspended.status, suspended.signal_timeout, suspended.state) == (
        S.SUSPENDED,
        2.5,
        {"asked": 1},
    )
    jump = to_outcome(
        finished(result=TaskResult.jump_to("a", state={"kept": {"n": 1}})),
        QueueProcessorConfig(),
        START_MS,
        never_draw,
    )
    assert (jump.target_stage_ref_id, jump.state) == ("a", {"kept": {"n": 1}})


def test_transient_error_state_replaces_the_task_state_for_the_retry() -> None:
    error = TransientError("busy", retry_after=0, state={"cursor": 10})
    outcome = to_outcome(finished(error=error), QueueProcessorConfig(), START_MS, never_draw)
    assert outcome.retry
    assert outcome.state == {"cursor": 10}
    plain = to_outcome(
        finished(error=TransientError("busy", retry_after=0)),
        QueueProcessorConfig(),
        START_MS,
        never_draw,
    )
    assert plain.state is None


@pytest.mark.parametrize(
    ("state", "says"),
    [({"when": object()}, "state['when']"), (["not", "a", "dict"], "state must be a dict")],
)
def test_transient_error_state_that_cannot_be_stored_fails_the_task(state: Any, says: str) -> None:
    error = TransientError("busy", retry_after=0)
    error.state = state
    outcome = to_outcome(finished(error=error), QueueProcessorConfig(), START_MS, never_draw)
    assert outcome.status is S.TERMINAL
    assert outcome.error is not None
    assert says in outcome.error
    assert "TransientError" in outcome.error
