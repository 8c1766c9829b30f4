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


def test_every_event_line_of_the_demo_names_what_it_is_about(tmp_path):
    # Issue 15: state.changed rows used to show up as lines naming nothing.
    out = io.StringIO()

    assert run_demo(str(tmp_path / "demo.db"), workers=2, out=out) == 0

    lines = [line for line in out.getvalue().splitlines() if " ms  " in line]
    assert lines
    assert not [line for line in lines if "state.changed" in line]
    for line in lines:
        kind, _, subject = line.split(" ms  ", 1)[1].partition(" ")
        assert kind.split(".")[0] in {"workflow", "stage", "task", "custom"}, line
        assert subject.strip(), line
    assert any(line.endswith("workflow.completed   Analyse a document") for line in lines)


def test_long_values_are_cut_with_an_ellipsis(tmp_path):
    from stabilize.demo import TEXT, WIDTH, describe_outputs, shorten

    out = io.StringIO()

    assert run_demo(str(tmp_path / "demo.db"), workers=2, out=out) == 0

    text = out.getvalue()
    assert TEXT not in text  # the fetched document is too long to print whole
    fetch_line = next(line for line in text.splitlines() if line.startswith("  fetch  "))
    assert fetch_line.endswith("\u2026")
    assert all(len(line) <= WIDTH for line in text.splitlines() if " ms  " in line)
    assert shorten("abc", 3) == "abc"
    assert shorten("abcd", 3) == "ab\u2026"
    assert describe_outputs({"n": 1, "s": "x" * 100}) == "n=1, s='" + "x" * 38 + "\u2026"
