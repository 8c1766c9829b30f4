"""Nothing heavy is imported by ``import stabilize`` or by ``stabilize --help``.

Each check runs in a fresh interpreter: the test process has imported far more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = [
    "httpx",
    "psycopg",
    "psycopg_pool",
    "websockets",
    "textual",
    "opentelemetry",
    "stabilize.llm",
    "stabilize.hitl",
    "stabilize.streaming",
]

REPORT_HEAVY = f"""
import json, sys
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STABILIZE_DISABLE_PLUGIN_AUTOLOAD"}
    env["COLUMNS"] = "100"
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, check=False, timeout=50
    )


def heavy_modules_after(code: str) -> list[str]:
    proc = run_python("-c", code + REPORT_HEAVY)
    assert proc.returncode == 0, proc.stderr
    loaded: list[str] = json.loads(proc.stdout.splitlines()[-1])
    return loaded


def test_import_stabilize_loads_nothing_heavy():
    assert heavy_modules_after("import stabilize") == []


def test_listing_exports_loads_nothing_heavy():
    assert heavy_modules_after("import stabilize; dir(stabilize); stabilize.__all__") == []


def test_python_m_stabilize_help_loads_nothing_heavy():
    code = """
import runpy, sys
sys.argv = ["stabilize", "--help"]
try:
    runpy.run_module("stabilize", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    assert exc.code == 0, exc.code
"""
    assert heavy_modules_after(code) == []


def test_python_m_stabilize_help_lists_the_builtins():
    proc = run_python("-m", "stabilize", "--help")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: stabilize")
    assert "version" in proc.stdout
    assert "demo" in proc.stdout


def test_python_m_stabilize_unknown_command_exits_2():
    proc = run_python("-m", "stabilize", "no-such-command")

    assert proc.returncode == 2
    assert "unknown command 'no-such-command'" in proc.stderr


def test_console_script_prints_the_version():
    script = Path(sys.executable).with_name("stabilize")
    if not script.exists():
        pytest.skip(f"no stabilize console script next to {sys.executable}")
    import stabilize

    proc = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=False, timeout=50
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"stabilize {stabilize.__version__}\n"
