"""The replay example of docs/streaming.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "streaming.md"


def test_replay_section_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("## Replay and history", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)  # the example writes history.db here
    exec(compile(block, f"{GUIDE.name}[replay]", "exec"), {"__name__": "streaming_guide"})
