"""Run every script of examples/control_flow on a fresh SQLite file and check what
docs/control-flow.md says about it."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stabilize import Workflow, WorkflowStatus

S = WorkflowStatus
EXAMPLES = Path(__file__).resolve().parent.parent / "control_flow"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"control_flow_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name: str, tmp_path: Path, **kwargs: Any) -> Any:
    return load(name).main(f"sqlite:///{tmp_path / 'flow.db'}", **kwargs)


def states(wf: Workflow) -> dict[str, tuple[str, str | None]]:
    return {s.ref_id: (s.status.value, s.status_reason) for s in wf.stages}


def outputs(wf: Workflow, ref: str) -> dict[str, Any]:
    return wf.stage_by_ref_id(ref).outputs


def test_every_script_is_tested() -> None:
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    tested = {n.removeprefix("test_") for n in globals() if n.startswith("test_")}
    assert scripts <= tested


def test_sequence_and_parallel(tmp_path: Path) -> None:
    wf = run("sequence_and_parallel", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert outputs(wf, "report") == {"report": "3 words"}
    assert outputs(wf, "longest") == {"longest": "durable"}


@pytest.mark.parametrize(
    ("amount", "taken", "skipped"),
    [(40, "auto_approve", "manual_review"), (500, "manual_review", "auto_approve")],
)
def test_exclusive_choice(tmp_path: Path, amount: int, taken: str, skipped: str) -> None:
    wf = run("exclusive_choice", tmp_path, amount=amount)
    assert wf.status is S.SUCCEEDED
    assert states(wf)[taken] == ("SUCCEEDED", None)
    assert states(wf)[skipped] == ("SKIPPED", "branch_not_taken")
    assert outputs(wf, "book") == {"booked": taken}


def test_multi_choice(tmp_path: Path) -> None:
    wf = run("multi_choice", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert states(wf) == {
        "prefs": ("SUCCEEDED", None),
        "send_email": ("SUCCEEDED", None),
        "send_sms": ("SKIPPED", "branch_not_taken"),
        "log_sms": ("SKIPPED", "branch_not_taken"),
        "send_push": ("SUCCEEDED", None),
        "summary": ("SUCCEEDED", None),
        "audit": ("SKIPPED", "disabled"),
    }
    assert outputs(wf, "summary") == {"sent": ["sent_send_email", "sent_send_push"]}


def test_multi_merge(tmp_path: Path) -> None:
    wf, index_runs = run("multi_merge", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert index_runs == 3


def test_discriminator(tmp_path: Path) -> None:
    wf, pick_runs = run("discriminator", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert pick_runs == 1  # fired once, on the first success
    assert outputs(wf, "pick") == {"picked": "fast"}
    assert states(wf)["slow"] == ("SUCCEEDED", None)  # IGNORE: the straggler finished
    assert outputs(wf, "slow") == {"answer": "slow"}
    assert outputs(wf, "publish") == {"published": "fast"}


def test_cancelling_quorum(tmp_path: Path) -> None:
    wf, canceled = run("cancelling_quorum", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert states(wf)["vote_c"] == ("CANCELED", "straggler")
    assert outputs(wf, "vote_c") == {}  # its late result was discarded
    assert canceled == ["vote_c"]  # on_cancel ran
    assert outputs(wf, "decide") == {"decision": ["yes", "yes"]}


def test_late_merge(tmp_path: Path) -> None:
    wf = run("late_merge", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert outputs(wf, "answer") == {
        "first": ["short answer"],
        "draft": ["short answer", "long answer"],
        "cost": 31,
    }


def test_jump_loop(tmp_path: Path) -> None:
    wf = run("jump_loop", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert wf.jump_count == 2
    assert outputs(wf, "publish") == {"published": 3}


def test_repeat_until(tmp_path: Path) -> None:
    wf = run("repeat_until", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert outputs(wf, "until_good") == {
        "until_good_iterations": 2,
        "until_good_condition_met": True,
    }
    assert outputs(wf, "report") == {"report": "2 tries"}


@pytest.mark.parametrize(("start", "iterations"), [(0, 3), (5, 0)])
def test_while_loop(tmp_path: Path, start: int, iterations: int) -> None:
    wf = run("while_loop", tmp_path, start_level=start)
    assert wf.status is S.SUCCEEDED
    assert outputs(wf, "refill")["refill_iterations"] == iterations
    assert outputs(wf, "report") == {"final_level": max(start, 3)}
    assert wf.stage_by_ref_id("add").status is S.SKIPPED  # the last check skips the body


def test_multi_instance(tmp_path: Path) -> None:
    wf, peak = run("multi_instance", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert peak <= 2  # max_concurrency
    assert outputs(wf, "measure") == {
        "instances": [{"size": 5}, {"size": 6}, {"size": 7}, {"size": 4}],
        "size": 22,
    }
    assert outputs(wf, "report") == {"total": 22}
    assert [s.ref_id for s in wf.stages if s.parent_stage_id] == [f"measure[{i}]" for i in range(4)]


def test_mi_partial_join(tmp_path: Path) -> None:
    wf = run("mi_partial_join", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert states(wf)["mirror[1]"] == ("CANCELED", "straggler")
    assert outputs(wf, "mirror") == {
        "instances": [{"uploaded_to": "a.example"}, None, {"uploaded_to": "b.example"}],
        "uploaded_to": ["a.example", "b.example"],
    }


def test_sub_workflow(tmp_path: Path) -> None:
    wf = run("sub_workflow", tmp_path)
    assert wf.status is S.SUCCEEDED
    enrich = outputs(wf, "enrich")
    assert enrich["sub_workflow_status"] == "SUCCEEDED"
    child = enrich["sub_workflow_outputs"]
    assert child["doubled"] == 42
    assert child["sub_workflow_outputs"] == {"plus_one": 22}
    assert outputs(wf, "report") == {"child_said": child}


def test_deferred_choice(tmp_path: Path) -> None:
    wf = run("deferred_choice", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert states(wf)["by_email"] == ("CANCELED", "withdrawn")
    assert states(wf)["by_phone"] == ("SUCCEEDED", None)
    assert outputs(wf, "close") == {"closed_via": "phone"}


def test_milestone(tmp_path: Path) -> None:
    wf = run("milestone", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert states(wf)["amend"] == ("SUCCEEDED", None)
    assert states(wf)["late_amend"] == ("SKIPPED", "milestone_passed")


def test_triggers(tmp_path: Path) -> None:
    wf, transient_refused = run("triggers", tmp_path)
    assert transient_refused
    assert wf.status is S.SUCCEEDED
    assert outputs(wf, "approve") == {
        "signal": "approved",
        "signal_data": {"by": "alice"},
        "signal_user": "alice",
    }


def test_mutex(tmp_path: Path) -> None:
    wf, spans = run("mutex", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start  # never two at once


def test_cancel_stage_and_region(tmp_path: Path) -> None:
    wf = run("cancel_stage_and_region", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert states(wf) == {
        "review": ("CANCELED", "canceled"),
        "notify": ("SKIPPED", "branch_not_taken"),
        "lint": ("CANCELED", "canceled"),
        "docs": ("CANCELED", "canceled"),
        "build": ("SUCCEEDED", None),
        "ship": ("SUCCEEDED", None),
    }


def test_cancel_workflow(tmp_path: Path) -> None:
    wf, seen = run("cancel_workflow", tmp_path)
    assert seen == [S.PAUSED, S.RUNNING, True]
    assert wf.status is S.CANCELED
    assert wf.cancellation_reason == "superseded"
    assert {s.ref_id: s.status for s in wf.stages} == {
        "crunch": S.CANCELED,
        "approve": S.CANCELED,
        "report": S.NOT_STARTED,
    }


def test_timers(tmp_path: Path) -> None:
    wf = run("timers", tmp_path)
    assert wf.status is S.SUCCEEDED
    assert states(wf) == {
        "cool_down": ("SUCCEEDED", None),
        "approval": ("SUCCEEDED", "deadline_routed"),
        "manual": ("SKIPPED", None),
        "notify": ("SUCCEEDED", None),
    }
    cool_down = wf.stage_by_ref_id("cool_down")
    assert cool_down.end_time is not None
    assert cool_down.start_time is not None
    assert cool_down.end_time - cool_down.start_time >= 200


def test_explicit_termination(tmp_path: Path) -> None:
    wf = run("explicit_termination", tmp_path)
    assert wf.status is S.CANCELED
    assert {s.ref_id: s.status for s in wf.stages} == {
        "approve": S.CANCELED,
        "archive": S.NOT_STARTED,
        "watchdog": S.CANCELED,
    }
