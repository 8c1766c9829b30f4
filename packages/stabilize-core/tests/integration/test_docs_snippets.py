"""Every Python snippet of README.md and docs/ runs on its own, in a fresh directory.

A snippet that continues the one before it says so on the line above its fence with
``<!-- snippet: continues -->`` (it then runs after that one, in the same process). A page
whose snippets share a preamble marks it ``<!-- snippet: setup -->`` (it runs on its own
too) and each of those snippets ``<!-- snippet: uses-setup -->`` (each runs after the
page's setup, in a process of its own). A snippet that cannot run here (it needs a
PostgreSQL server, the network, docker or an LLM key) says why with
``<!-- snippet: skip <reason> -->``. Snippets using an extension
(``stabilize.llm``, ``stabilize.hitl``, ``stabilize.streaming``) skip when it is not
installed: core's tests run without them.

Pages in ``LEFT_TO_OTHERS`` are run elsewhere or not yet marked (see there).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
LEFT_TO_OTHERS = {
    "docs/agentic.md",  # stabilize-llm's tests/test_agentic_docs.py runs it, in order
}
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!--\s*snippet:\s*([\w-]+)\s*(.*?)\s*-->")
EXTENSIONS = {
    "stabilize-llm": ("stabilize.llm", re.compile(r"stabilize\.llm|\b(LLMClient|AgentLoopTask)\b")),
    "stabilize-hitl": (
        "stabilize.hitl",
        re.compile(r"stabilize\.hitl|\b(ApprovalTask|approve|reject|send_signal)\b"),
    ),
    "stabilize-stream": ("stabilize.streaming", re.compile(r"stabilize\.streaming|WorkflowStream")),
}
HANG_GUARD = 120


@dataclass
class Snippet:
    """One runnable unit: a block with the blocks it continues."""

    doc: str
    line: int
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def documents() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [d for d in docs if d.relative_to(ROOT).as_posix() not in LEFT_TO_OTHERS]


def snippets_of(path: Path) -> list[Snippet]:
    text = path.read_text(encoding="utf-8")
    doc = path.relative_to(ROOT).as_posix()
    found: list[Snippet] = []
    setup: str | None = None
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        kind, reason = (marker.group(1), marker.group(2)) if marker else (None, "")
        line = text.count("\n", 0, match.start()) + 1
        code = match.group(1)
        if kind == "continues":
            if not found:
                raise AssertionError(f"{doc}:{line}: 'continues' but no snippet before it")
            found[-1].code += "\n" + code
            continue
        if kind == "setup":
            setup = code
            kind = None
        elif kind == "uses-setup":
            if setup is None:
                raise AssertionError(f"{doc}:{line}: 'uses-setup' but no setup before it")
            code = setup + "\n" + code
            kind = None
        if kind not in (None, "skip"):
            raise AssertionError(f"{doc}:{line}: unknown snippet marker {kind!r}")
        if kind == "skip" and not reason:
            raise AssertionError(f"{doc}:{line}: a skipped snippet must say why")
        found.append(Snippet(doc, line, code, reason if kind == "skip" else None))
    return found


SNIPPETS = [s for doc in documents() for s in snippets_of(doc)]


def test_most_snippets_run() -> None:
    skipped = [s.id for s in SNIPPETS if s.skip]
    assert len(SNIPPETS) >= 40
    assert len(skipped) * 4 <= len(SNIPPETS), skipped  # keep it honest


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.skip:
        pytest.skip(snippet.skip)
    for dist, (module, uses) in EXTENSIONS.items():
        if uses.search(snippet.code) and importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {dist}, which is not installed")
    script = tmp_path / "snippet.py"
    script.write_text(snippet.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILIZE_")}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_GUARD,
        check=False,
    )
    assert proc.returncode == 0, f"{snippet.id}\n{proc.stdout}\n{proc.stderr}"
