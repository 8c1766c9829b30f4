"""``stabilize prompt`` with every package installed: all sections, all names (issue 17).

Core's ``tests/integration/test_prompt_cli.py`` runs every ```python block of the output for
whatever is installed (here: all of it); this test checks that the full reference covers
every extension and stays within its size.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from stabilize._plugins import export_names
from stabilize._prompt import MAX_CHARS, render

EXTENSIONS = ["stabilize.llm", "stabilize.hitl", "stabilize.streaming"]


@pytest.fixture(scope="module")
def text() -> str:
    return render()


def test_every_extension_is_installed_here() -> None:
    for module in EXTENSIONS:
        importlib.import_module(module)


def test_the_full_reference_fits(text: str) -> None:
    assert len(text) <= MAX_CHARS
    assert "Not installed" not in text


@pytest.mark.parametrize("module", EXTENSIONS)
def test_every_name_of_every_extension_is_in_it(text: str, module: str) -> None:
    names = importlib.import_module(module).__all__

    assert f"### `{module}`" in text
    for name in names:
        assert f"- `{name}" in text.split(f"### `{module}`", 1)[1], (module, name)


def test_every_lazy_export_is_named_with_its_extension(text: str) -> None:
    lazy = text.split("Re-exported lazily from extensions: ", 1)[1].split("\n", 1)[0]

    for name in export_names():
        assert f"`{name}` (stabilize." in lazy, name


def test_the_extension_sections_are_there(text: str) -> None:
    for heading in ("## Signals and approvals", "## Streaming", "## LLM toolkit"):
        assert heading in text
    assert "from stabilize.hitl import approve" in text
    assert "from stabilize.streaming import WorkflowStream" in text
    assert "from stabilize.llm import" in text


def test_another_process_renders_the_same(text: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from stabilize._prompt import render; sys.stdout.write(render())",
        ],
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "987", "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=60,
    )

    assert proc.stdout == text
