"""The agent team example: offline in one process, and under SIGKILL in workers.

Each run has pytest run the project twice (the first attempt fails), so the tests share
their runs: one finished run, one stopped at the approval gate.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from stabilize import Workflow, WorkflowEngine, WorkflowStatus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def team() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.syspath_prepend(str(REPO))
        for name in [m for m in sys.modules if m.startswith("examples.agent_team")]:
            monkeypatch.delitem(sys.modules, name)
        from examples.agent_team import team

        yield team


@dataclass
class Run:
    workflow: Workflow
    project: Path
    db_url: str
    ledger: Path


@pytest.fixture(scope="module")
def finished(team: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Run:
    from examples._chaos import Ledger

    tmp = tmp_path_factory.mktemp("finished")
    db_url, ledger = f"sqlite:///{tmp / 'team.db'}", tmp / "ledger.jsonl"
    wf = team.main(db_url, workdir=tmp / "project", ledger=Ledger(ledger))
    return Run(wf, tmp / "project", db_url, ledger)


@pytest.fixture(scope="module")
def waiting(team: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("waiting")
    db_url = f"sqlite:///{tmp / 'team.db'}"
    wf = team.main(db_url, workdir=tmp / "project", auto_approve=False)
    return Run(wf, tmp / "project", db_url, tmp / "none.jsonl")


def test_team_loops_until_the_tests_pass(finished: Run) -> None:
    wf = finished.workflow
    assert wf.status is WorkflowStatus.SUCCEEDED, wf.failure_summary()
    assert wf.stage_by_ref_id("triage").outputs == {"attempts": 2, "tests": "passed"}
    assert wf.jump_count == 1
    assert wf.stage_by_ref_id("approve").outputs["approved_by"] == "example"
    assert wf.stage_by_ref_id("release").outputs["stdout"] == "released 0.1.0"
    assert (finished.project / "dist" / "slugify-0.1.0.tar.gz").exists()
    assert "re.findall" in (finished.project / "slugify.py").read_text()


def test_tool_keys_stay_unique_across_the_loop_back(finished: Run) -> None:
    from examples._chaos import Ledger

    starts = [e for e in Ledger(finished.ledger).entries() if e["phase"] == "start"]
    writes = [e["key"] for e in starts if e["kind"] == "tool"]
    assert len(writes) == 3  # the tests, the buggy library, the fixed one
    assert len(set(writes)) == len(writes)
    calls = [(e["kind"], e["key"]) for e in starts]
    assert len(set(calls)) == len(calls)


def test_team_waits_for_a_human(waiting: Run) -> None:
    wf = waiting.workflow
    assert wf.status is WorkflowStatus.RUNNING
    assert wf.stage_by_ref_id("approve").status is WorkflowStatus.SUSPENDED
    assert wf.stage_by_ref_id("release").status is WorkflowStatus.NOT_STARTED


def test_a_worker_finishes_the_run_a_human_approved(team: ModuleType, waiting: Run) -> None:
    from examples.agent_team import worker

    from stabilize.hitl import approve

    wf = waiting.workflow
    with WorkflowEngine(waiting.db_url) as engine:
        gate = wf.stage_by_ref_id("approve")
        approve(engine.queue, wf.id, gate.id, {"note": "looks good"}, user="alice")
    assert worker.main([waiting.db_url, str(waiting.project), wf.id]) == 0
    with WorkflowEngine(waiting.db_url) as engine:
        done = engine.retrieve(wf.id)
    assert done.status is WorkflowStatus.SUCCEEDED, done.failure_summary()
    assert done.stage_by_ref_id("approve").outputs["approved_by"] == "alice"
    assert (waiting.project / "dist" / "slugify-0.1.0.tar.gz").exists()


@pytest.mark.chaos
def test_chaos_run_repeats_no_committed_call(team: ModuleType, tmp_path: Path) -> None:
    from examples.agent_team.chaos import run_chaos

    lines: list[str] = []
    outcome = run_chaos(f"sqlite:///{tmp_path / 'team.db'}", tmp_path, out=lines.append)
    wf = outcome.workflow
    assert wf.status is WorkflowStatus.SUCCEEDED, wf.failure_summary()
    assert wf.stage_by_ref_id("triage").outputs == {"attempts": 2, "tests": "passed"}
    assert (outcome.project / "dist" / "slugify-0.1.0.tar.gz").exists()
    verdict = outcome.verdict
    assert verdict.ok, verdict.problems
    # The tester's two model calls and its write, and the coder's first model call.
    assert verdict.committed_before_kill == 4
    killed_pid, hung_key = (tmp_path / "tool-started").read_text().split()
    assert int(killed_pid) == outcome.killed_pid
    # The coder's write in flight at the kill ran again, under the same idempotency key;
    # nothing else did.
    [rerun] = verdict.repeated
    assert (rerun["kind"], rerun["key"]) == ("tool", hung_key)
    assert rerun["pids"][0] == outcome.killed_pid != rerun["pids"][1]
    assert any("SIGKILL" in line for line in lines)
