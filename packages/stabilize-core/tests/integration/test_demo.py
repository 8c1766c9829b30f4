"""``stabilize demo``: in process and as a real command."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from stabilize import SqliteWorkflowStore, WorkflowStatus
from stabilize.demo import run_demo


def test_run_demo_succeeds_and_says_where_state_lives(tmp_path):
    path = tmp_path / "demo.db"
    out = io.StringIO()

    code = run_demo(str(path), workers=4, out=out)

    text = out.getvalue()
    assert code == 0, text
    assert "workflow SUCCEEDED" in text
    assert str(path.resolve()) in text
    assert "summary:" in text
    assert "custom.progress" in text
    [wf] = SqliteWorkflowStore(f"sqlite:///{path}").list_workflows()
    assert wf.status is WorkflowStatus.SUCCEEDED
    assert {s.ref_id: s.status for s in wf.stages} == dict.fromkeys(
        ["fetch", "count_words", "top_letters", "sentences", "summarize"],
        WorkflowStatus.SUCCEEDED,
    )


def test_run_demo_twice_on_one_file(tmp_path):
    path = tmp_path / "demo.db"

    assert run_demo(str(path), workers=2, out=io.StringIO()) == 0
    assert run_demo(str(path), workers=1, out=io.StringIO()) == 0

    assert SqliteWorkflowStore(f"sqlite:///{path}").count(status="SUCCEEDED") == 2


def test_demo_command_in_a_subprocess(tmp_path):
    path = tmp_path / "cli-demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILIZE_SQLITE_")}

    proc = subprocess.run(
        [sys.executable, "-m", "stabilize", "demo", "--db", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=50,
    )

    assert proc.returncode == 0, proc.stderr
    assert "workflow SUCCEEDED" in proc.stdout
    assert str(path.resolve()) in proc.stdout
    assert path.exists()
