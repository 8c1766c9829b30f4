"""``stabilize monitor`` as a command, in subprocesses (no terminal: the one-shot summary)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from monitor_support import PG_URL_ENV, Engine, gated_workflow, plain_workflow, wait_for

from stabilize_monitor import cli


def stabilize(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m stabilize ARGS`` without a terminal (stdin from /dev/null)."""
    return subprocess.run(
        [sys.executable, "-m", "stabilize", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_help_documents_every_option_with_an_example() -> None:
    done = stabilize("monitor", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps to the terminal's width
    for option in (
        "--db-url URL",
        "--schema NAME",
        "--app APP",
        "--status STATUS",
        "--refresh SECONDS",
        "--verbose",
    ):
        assert option in text
    for example in (
        "e.g. --schema jobs",
        "e.g. --app billing",
        "e.g. --status failed",
        "e.g. --refresh 5",
        "sqlite:///path/to/file.db or postgresql://",
        "all, running (with suspended and paused), failed",
        "Example: stabilize monitor --db-url sqlite:///stabilize.db",
    ):
        assert example in text
    assert "q quit" in text


def test_stabilize_help_lists_monitor_without_importing_textual() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from stabilize.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out): main(['--help'])\n"
        "assert 'monitor' in out.getvalue(), out.getvalue()\n"
        "import stabilize_monitor.cli\n"
        "stabilize_monitor.cli.main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_without_a_terminal_it_prints_a_summary_and_exits_zero(engine: Engine) -> None:
    gated = engine.start(gated_workflow())
    report = engine.start(plain_workflow())
    wait_for(lambda: engine.status(report.id) == "SUCCEEDED", "the report to finish")
    wait_for(lambda: engine.stage_status(gated.id, "approve") == "SUSPENDED", "the gate")
    args = ["monitor", "--db-url", engine.url]
    if engine.schema is not None:
        args += ["--schema", engine.schema]
    done = stabilize(*args)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "workflows: 2" in out
    assert "  RUNNING                1" in out
    assert "  SUCCEEDED              1" in out
    assert "queue: " in out
    assert gated.id in out
    assert report.id in out

    failed = stabilize(*args, "--status", "failed", "--app", "billing")
    assert failed.returncode == 0, failed.stderr
    assert "filters: app: billing  status: failed" in failed.stdout
    assert "newest 0 workflows:" in failed.stdout


def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "x.db"
    done = stabilize("monitor", "--db-url", f"sqlite:///{missing}")
    assert done.returncode == 1
    assert f"no stabilize database at {missing}" in done.stderr
    assert not missing.parent.exists()


@pytest.mark.postgres
def test_a_missing_postgres_schema_is_refused_and_not_created() -> None:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is not set: PostgreSQL tests need a server URL")
    done = stabilize("monitor", "--db-url", url, "--schema", "t_monitor_absent")
    assert done.returncode == 1
    assert "t_monitor_absent does not exist" in done.stderr
    import psycopg

    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = 't_monitor_absent'"
        ).fetchone()
    assert found is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "broken"], "invalid choice: 'broken'"),
        (["--refresh", "0"], "must be above 0"),
        (["--refresh", "soon"], "not a number: 'soon'"),
        ([], "the following arguments are required: --db-url"),
    ],
)
def test_bad_options_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [] if not args else ["--db-url", "sqlite:///unused.db"]
    assert cli.main([*base, *args]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_db_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--db-url", "garbage"]) == 2
    assert "not a database URL: 'garbage'" in capsys.readouterr().err


def test_schema_with_sqlite_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "x.db"
    assert cli.main(["--db-url", f"sqlite:///{db}", "--schema", "s"]) == 1
    assert "--schema applies to PostgreSQL URLs only" in capsys.readouterr().err
    assert not db.exists()


def test_without_the_plugin_stabilize_monitor_says_what_to_install() -> None:
    done = stabilize("monitor", "--db-url", "x", env={"STABILIZE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert done.returncode != 0
    assert "pip install stabilize-monitor" in done.stderr
