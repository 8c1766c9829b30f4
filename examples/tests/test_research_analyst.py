"""The research analyst example: offline in one process, and under SIGKILL in workers."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from stabilize import WorkflowStatus
from stabilize.events import open_event_store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def analyst(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO))
    for name in [m for m in sys.modules if m.startswith("examples.research_analyst")]:
        monkeypatch.delitem(sys.modules, name)
    from examples.research_analyst import run

    return run


def test_offline_run(tmp_path: Path, analyst: ModuleType) -> None:
    lines: list[str] = []
    outcome = analyst.main(f"sqlite:///{tmp_path / 'a.db'}", workdir=tmp_path, out=lines.append)
    wf = outcome.workflow
    assert wf.status is WorkflowStatus.SUCCEEDED, wf.failure_summary()
    assert wf.stage_by_ref_id("router").outputs["rounds"] == 2  # looped back once
    assert wf.stage_by_ref_id("router").outputs["confidence"] == 0.9
    synthesize = wf.stage_by_ref_id("synthesize")
    assert synthesize.outputs["findings_used"] == 2  # 2 of 3
    researchers = [wf.stage_by_ref_id(f"researcher_{i}").status for i in range(3)]
    assert sorted(s.value for s in researchers) == ["CANCELED", "SUCCEEDED", "SUCCEEDED"]
    reviews = sorted(wf.stage_by_ref_id(r).status.value for r in ("review_a", "review_b"))
    assert reviews == ["CANCELED", "SUCCEEDED"]  # the first verdict won
    assert wf.stage_by_ref_id("approve").outputs["approved_by"] == "example"
    assert wf.stage_by_ref_id("report").outputs["sub_workflow_status"] == "SUCCEEDED"
    assert outcome.report.read_text().startswith("# How will heat pumps")
    assert any(f"stabilize approve {wf.id} approve --db-url" in line for line in lines)
    assert outcome.verdict is None


def test_tool_keys_stay_unique_across_the_loop_back(tmp_path: Path, analyst: ModuleType) -> None:
    analyst.main(f"sqlite:///{tmp_path / 'a.db'}", workdir=tmp_path, out=lambda _: None)
    from examples.research_analyst.ledger import Ledger

    starts = [e for e in Ledger(tmp_path / "ledger.jsonl").entries() if e["phase"] == "start"]
    keys = [(e["kind"], e["key"]) for e in starts]
    assert len(keys) == len(set(keys))


@pytest.mark.chaos
def test_chaos_run_repeats_no_committed_call(tmp_path: Path, analyst: ModuleType) -> None:
    lines: list[str] = []
    outcome = analyst.main(
        f"sqlite:///{tmp_path / 'a.db'}", workdir=tmp_path, chaos=True, out=lines.append
    )
    assert outcome.workflow.status is WorkflowStatus.SUCCEEDED
    verdict = outcome.verdict
    assert verdict is not None
    assert verdict.ok, verdict.problems
    # Seen once in CI (session 13, not reproduced in 40 runs): 0 committed calls and no
    # call run twice. The run's output and the ledger tell the next occurrence's story.
    ledger = (tmp_path / "ledger.jsonl").read_text(encoding="utf-8")
    assert verdict.committed_before_kill >= 1, "\n".join([str(verdict), *lines, ledger])
    killed_pid, hung_key = (tmp_path / "tool-started").read_text().split()
    rerun = [r for r in verdict.repeated if r["key"] == hung_key]
    log = open_event_store(f"sqlite:///{tmp_path / 'a.db'}", create=False)
    hung_stage_id = hung_key.split(":")[1]
    straggler = [
        e
        for e in log.get_events(outcome.workflow.id)
        if e.event_type == "stage.canceled"
        and e.entity_id == hung_stage_id
        and e.data.get("reason") == "straggler"
    ]
    log.close()
    if rerun:
        # The tool call in flight at the kill ran again, under the same idempotency key.
        assert [r["pids"][0] for r in rerun] == [int(killed_pid)]
    else:
        # Or the other two researchers met the 2-of-3 join while the killed worker's
        # lease ran, and the stage of the hung call was canceled as a straggler instead.
        assert straggler, "the hung call neither ran again nor was its stage canceled"
    assert any("SIGKILL" in line for line in lines)
    assert outcome.report.exists()
