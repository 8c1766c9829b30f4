"""The agent team example, offline: the first attempt fails its tests, the second passes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from stabilize import WorkflowStatus

SCRIPT = Path(__file__).resolve().parent.parent / "agent_team" / "team.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agent_team_team", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_team_loops_until_the_tests_pass(tmp_path: Path) -> None:
    project = tmp_path / "project"
    wf = load().main(f"sqlite:///{tmp_path / 'team.db'}", workdir=project)
    assert wf.status is WorkflowStatus.SUCCEEDED, wf.failure_summary()
    assert wf.stage_by_ref_id("triage").outputs == {"attempts": 2, "tests": "passed"}
    assert wf.jump_count == 1
    assert wf.stage_by_ref_id("approve").outputs["approved_by"] == "example"
    assert wf.stage_by_ref_id("release").outputs["stdout"] == "released 0.1.0"
    assert (project / "dist" / "slugify-0.1.0.tar.gz").exists()
    assert "re.findall" in (project / "slugify.py").read_text()


def test_team_waits_for_a_human(tmp_path: Path) -> None:
    wf = load().main(f"sqlite:///{tmp_path / 'team.db'}", workdir=tmp_path, auto_approve=False)
    assert wf.status is WorkflowStatus.RUNNING
    assert wf.stage_by_ref_id("approve").status is WorkflowStatus.SUSPENDED
    assert wf.stage_by_ref_id("release").status is WorkflowStatus.NOT_STARTED
