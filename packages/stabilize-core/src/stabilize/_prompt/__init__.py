"""``stabilize prompt``: one self-contained Markdown reference for a coding agent.

The prose lives in package-data fragments (``*.md`` beside this module, read through
``importlib.resources``); what can drift is generated from the installed code by
:mod:`stabilize._prompt._api` and put where a fragment says ``<!-- generated: NAME -->``.
Sections about an extension appear when it is installed, else a line saying what to
install. The output is the same on every run (no time, path or memory address).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources

from stabilize._prompt import _api
from stabilize._version import __version__
from stabilize.models import WorkflowStatus

__all__ = ["MAX_CHARS", "render"]

MAX_CHARS = 40_000
"""The most characters the reference may have (issue 17)."""

_SECTIONS: tuple[tuple[str, str | None, str | None], ...] = (
    ("00_intro.md", None, None),
    ("10_model.md", None, None),
    ("20_control_flow.md", None, None),
    ("30_data_flow.md", None, None),
    ("40_tasks.md", None, None),
    ("50_signals.md", None, None),
    ("51_hitl.md", "stabilize.hitl", "51_hitl_missing.md"),
    ("60_streaming.md", "stabilize.streaming", "60_streaming_missing.md"),
    ("70_llm.md", "stabilize.llm", "70_llm_missing.md"),
    ("80_durability.md", None, None),
    ("90_mistakes.md", None, None),
)
"""(fragment, the extension it needs or None, the fragment to use without it)."""

_MARKER = re.compile(r"<!-- generated: (\w+) -->")


def render() -> str:
    """Build the reference for what is installed.

    Returns:
        The Markdown text, ending in a newline.

    Raises:
        KeyError: A fragment names a generated part that does not exist (a bug).
    """
    parts = []
    for name, needs, otherwise in _SECTIONS:
        if needs is not None and not _api.installed(needs):
            if otherwise is None:
                continue
            name = otherwise
        parts.append(_fill(_fragment(name)).strip())
    parts.append(_api.api_section().strip())
    return "\n\n".join(parts) + "\n"


def _fragment(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _fill(text: str) -> str:
    return _MARKER.sub(lambda m: _GENERATED[m.group(1)](), text)


def _installed_line() -> str:
    have = [f"stabilize-core {__version__}"]
    missing: list[str] = []
    for module, dist in _api.EXTENSIONS.items():
        (have if _api.installed(module) else missing).append(dist)
    text = f"Installed: {', '.join(have)}."
    if missing:
        text += f" Not installed: {', '.join(missing)}."
    return text


def _statuses() -> str:
    return (
        "Statuses (`WorkflowStatus`, of workflows, stages and tasks): "
        + ", ".join(f"`{s.name}`" for s in WorkflowStatus)
        + ". A workflow whose stage is `SUSPENDED` stays `RUNNING`."
    )


_GENERATED: dict[str, Callable[[], str]] = {
    "installed": _installed_line,
    "statuses": _statuses,
    "stage_fields": _api.stage_fields,
    "tasks": _api.tasks_section,
    "reducers": _api.reducer_names,
}
