"""Every Python snippet of docs/agentic.md runs, in order, against the scripted model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "agentic.md"


def test_guide_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)  # the snippets write their SQLite files here
    namespace: dict[str, object] = {"__name__": "agentic_guide"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE.name}[{i}]", "exec"), namespace)
