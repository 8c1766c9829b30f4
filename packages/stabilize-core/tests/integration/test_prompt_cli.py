"""``stabilize prompt`` from the shell: its output is render()'s, and every block runs (issue 17).

Each ```python block of the output runs in a fresh directory, in a subprocess, offline. A
block whose first line is ``# continues the previous block`` runs after that one, in the
same process. In the core-alone run the extensions' sections are absent (they say what to
install), so this test covers whatever is installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stabilize._prompt import MAX_CHARS, render

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
CONTINUES = "# continues the previous block"


def run_stabilize(*args: str, cwd: Path, seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILIZE_")}
    return subprocess.run(
        [sys.executable, "-m", "stabilize", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "PYTHONHASHSEED": seed},
        check=False,
        timeout=60,
    )


def blocks(text: str) -> list[str]:
    found: list[str] = []
    for match in FENCE.finditer(text):
        code = match.group(1)
        if code.startswith(CONTINUES):
            assert found, "a block continues nothing"
            found[-1] += "\n" + code
        else:
            found.append(code)
    return found


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> str:
    proc = run_stabilize("prompt", cwd=tmp_path_factory.mktemp("prompt"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_the_command_prints_the_reference(printed: str) -> None:
    assert printed == render()
    assert len(printed) <= MAX_CHARS


def test_two_processes_print_the_same_text(printed: str, tmp_path: Path) -> None:
    other = run_stabilize("prompt", cwd=tmp_path, seed="12345")

    assert other.stdout == printed
    assert list(tmp_path.iterdir()) == []  # it writes nothing


def test_prompt_refuses_arguments(tmp_path: Path) -> None:
    proc = run_stabilize("prompt", "extra", cwd=tmp_path)

    assert proc.returncode == 2
    assert proc.stderr.startswith("stabilize prompt: error: unrecognized arguments: extra")
    assert proc.stdout == ""


def test_there_are_blocks_to_run(printed: str) -> None:
    assert len(blocks(printed)) >= 4


def test_a_continued_block_runs_with_the_one_before() -> None:
    text = "```python\nx = 1\n```\n\n```python\n# continues the previous block\nassert x\n```\n"

    assert blocks(text) == ["x = 1\n\n# continues the previous block\nassert x\n"]


BLOCKS = blocks(render())


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_block_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILIZE_")}

    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=120,
    )

    assert proc.returncode == 0, f"{code}\n{proc.stderr}"
