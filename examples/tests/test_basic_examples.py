"""Run every script of examples/basics on a fresh SQLite file."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stabilize import Workflow, WorkflowStatus

EXAMPLES = Path(__file__).resolve().parent.parent / "basics"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"basics_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name: str, tmp_path: Path, **kwargs: Any) -> Any:
    return load(name).main(f"sqlite:///{tmp_path / 'basics.db'}", **kwargs)


def test_every_script_is_tested() -> None:
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    tested = {n.removeprefix("test_") for n in globals() if n.startswith("test_")}
    assert scripts <= tested


def test_shell_task(tmp_path: Path) -> None:
    wf = run("shell_task", tmp_path)
    assert wf.status is WorkflowStatus.SUCCEEDED
    assert wf.stage_by_ref_id("build").outputs["stdout"] == "building 1.4.2 for linux-amd64"


def test_http_task(tmp_path: Path) -> None:
    wf = run("http_task", tmp_path)
    assert wf.status is WorkflowStatus.SUCCEEDED
    assert wf.stage_by_ref_id("fetch").outputs["status_code"] == 200
    assert wf.stage_by_ref_id("report").outputs == {"total": 8}


def skipped_or_succeeded(result: Workflow | str) -> None:
    if isinstance(result, str):
        assert result.startswith("skipped: ")
        pytest.skip(result)
    assert result.status is WorkflowStatus.SUCCEEDED, result.failure_summary()


def test_ssh_task(tmp_path: Path) -> None:
    skipped_or_succeeded(run("ssh_task", tmp_path))


def test_ssh_task_says_why_it_skips(tmp_path: Path) -> None:
    result = run("ssh_task", tmp_path, host="nobody@host.invalid")
    assert isinstance(result, str)
    assert result.startswith("skipped: ")
    assert not (tmp_path / "basics.db").exists()  # nothing was started


def test_docker_task(tmp_path: Path) -> None:
    skipped_or_succeeded(run("docker_task", tmp_path))


def test_event_sourcing(tmp_path: Path) -> None:
    seen = run("event_sourcing", tmp_path)
    assert seen["workflow"].status is WorkflowStatus.SUCCEEDED
    assert seen["event_types"][0] == "workflow.created"
    assert seen["event_types"][-1] == "workflow.completed"
    assert seen["rebuilt_equals_stored"] is True
    assert seen["discount_before"] == "NOT_STARTED"
    assert seen["invoice_at_that_point"] in ("NOT_STARTED", "RUNNING")
    assert seen["invoice_at_the_end"] == {"total": 90.0}


@pytest.mark.parametrize(
    ("ticket", "taken", "skipped"),
    [("I want my money back", "refund", "answer"), ("Where is my parcel?", "answer", "refund")],
)
def test_dynamic_routing(tmp_path: Path, ticket: str, taken: str, skipped: str) -> None:
    wf = run("dynamic_routing", tmp_path, ticket=ticket)
    assert wf.status is WorkflowStatus.SUCCEEDED
    assert wf.stage_by_ref_id(taken).status is WorkflowStatus.SUCCEEDED
    assert wf.stage_by_ref_id(skipped).status is WorkflowStatus.SKIPPED
    assert wf.stage_by_ref_id("close").outputs == {
        "closed": wf.stage_by_ref_id(taken).outputs["handled_by"]
    }


def test_live_streaming(tmp_path: Path) -> None:
    frames = run("live_streaming", tmp_path)
    sequences = [f["sequence"] for f in frames]
    assert sequences == list(range(1, len(frames) + 1))  # no gap, no duplicate
    progress = [f["data"]["message"] for f in frames if f["event_type"] == "custom.progress"]
    assert progress == ["page 1 of 3", "page 2 of 3", "page 3 of 3"]
    assert frames[-1]["event_type"] == "workflow.completed"
