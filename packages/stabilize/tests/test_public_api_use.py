"""Extensions, the monitor and the examples use core's public API only (issue 18).

DESIGN.md, "Layers point one way": what lives outside core imports only documented public
modules of it. A module is private when a component of its path starts with ``_``
(``stabilize._cli_support``, ``stabilize.tasks._context``), and internal when it is the
engine or storage (``stabilize.engine``, ``stabilize.backends`` but for the dialect
packages' public names, ``stabilize.records``, ``stabilize.message_kinds``). A package may
import its own private modules (``stabilize.llm._client`` inside ``stabilize.llm``), never
another's. Every import counts: at the top, in a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# Every .py file under these is checked; its dotted name starts at the directory.
SOURCE_ROOTS = (
    "packages/stabilize-llm/src",
    "packages/stabilize-hitl/src",
    "packages/stabilize-stream/src",
    "apps/monitor/src",
    "examples",
)

INTERNAL = (
    "stabilize.engine",
    "stabilize.backends",
    "stabilize.records",
    "stabilize.message_kinds",
)
PUBLIC_DIALECTS = ("stabilize.backends.sqlite", "stabilize.backends.postgres")


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def owner_of(module: str) -> str:
    """The package a module belongs to: ``stabilize.llm`` for an extension's, else its top."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "stabilize" and len(parts) > 1 else parts[0]


def refusal(target: str, owner: str) -> str | None:
    """Why ``owner``'s code may not import ``target`` (a dotted name), or None if it may."""
    if not _within(target, "stabilize") or _within(target, owner):
        return None
    if any(part.startswith("_") for part in target.split(".")[1:]):
        return "a private module of another package"
    if any(_within(target, p) for p in INTERNAL) and not any(
        _within(target, p) for p in PUBLIC_DIALECTS
    ):
        return "an internal module of core"
    return None


def imported_names(node: ast.Import | ast.ImportFrom, module: str) -> Iterator[str]:
    """The dotted names an import statement reaches: ``from a import b`` reaches ``a.b``."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module.rpartition(".")[0]
        base = importlib.util.resolve_name("." * node.level + base, package)
    for alias in node.names:
        yield base if alias.name == "*" else f"{base}.{alias.name}"


def violations(source: str, path: str, module: str) -> list[str]:
    """``path:line: ...`` for each import in ``source`` it may not make.

    ``module`` is the file's dotted name, ``__init__`` included for a package's.
    """
    owner = owner_of(module)
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for target in imported_names(node, module):
            why = refusal(target, owner)
            if why is not None:
                found.append(f"{path}:{node.lineno}: imports {target}, {why}")
    return found


def checked_files() -> Iterator[tuple[Path, str]]:
    """Each checked file with its dotted name (``stabilize.hitl._signals``)."""
    for directory in SOURCE_ROOTS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            yield path, ".".join(path.relative_to(ROOT / directory).with_suffix("").parts)


def test_extensions_the_monitor_and_examples_import_only_public_core_modules() -> None:
    found = []
    for path, module in checked_files():
        rel = path.relative_to(ROOT).as_posix()
        found += violations(path.read_text(encoding="utf-8"), rel, module)
    assert found == [], "\n".join(found)


def test_every_source_root_is_scanned() -> None:
    modules = {module for _, module in checked_files()}
    for expected in (
        "stabilize.llm._agent",
        "stabilize.hitl._signals",
        "stabilize.streaming.gateway.cli",
        "stabilize_monitor.cli",
        "stabilize.streaming.__init__",
        "basics.event_sourcing",
    ):
        assert expected in modules


SYNTHETIC = """\
from stabilize.tasks._context import ContextReader
from stabilize.tasks import ContextReader, mask_secrets
from stabilize import _cli_support
from stabilize.cli import command_parser
import stabilize.engine.transitions
from stabilize.records import Effects
from stabilize.backends.sqlite import SqliteBackend
from stabilize.backends import Backend
from stabilize.llm._client import LLMClient
from stabilize.hitl._signals import approve
from stabilize.queue.processor._processor import QueueProcessor
from stabilize.events import get_event_bus
from . import _helpers
from ._stage import client_for
import json

def later():
    from stabilize.message_kinds import RUN_TASK
"""


def test_the_checker_reports_each_private_or_internal_import_with_its_line() -> None:
    assert violations(SYNTHETIC, "ext.py", "stabilize.llm._agent") == [
        "ext.py:1: imports stabilize.tasks._context.ContextReader, a private module of "
        "another package",
        "ext.py:3: imports stabilize._cli_support, a private module of another package",
        "ext.py:5: imports stabilize.engine.transitions, an internal module of core",
        "ext.py:6: imports stabilize.records.Effects, an internal module of core",
        "ext.py:8: imports stabilize.backends.Backend, an internal module of core",
        "ext.py:10: imports stabilize.hitl._signals.approve, a private module of another package",
        "ext.py:11: imports stabilize.queue.processor._processor.QueueProcessor, a private "
        "module of another package",
        "ext.py:18: imports stabilize.message_kinds.RUN_TASK, an internal module of core",
    ]


@pytest.mark.parametrize(
    ("module", "reported"),
    [
        ("stabilize.hitl.cli", "stabilize.llm._client.LLMClient"),
        ("research_analyst.app", "stabilize.llm._client.LLMClient"),
        ("stabilize_monitor.cli", "stabilize.llm._client.LLMClient"),
    ],
)
def test_another_packages_private_module_is_reported(module: str, reported: str) -> None:
    found = violations("from stabilize.llm._client import LLMClient\n", "x.py", module)

    assert found == [f"x.py:1: imports {reported}, a private module of another package"]


def test_a_relative_import_is_resolved_against_the_importing_module() -> None:
    assert violations("from .._stage import a\n", "x.py", "stabilize.llm.sub._agent") == []
    assert violations("from ._signals import b\n", "y.py", "stabilize.hitl.__init__") == []
    assert violations("from ..tasks import _context\n", "z.py", "stabilize.hitl._x") == [
        "z.py:1: imports stabilize.tasks._context, a private module of another package"
    ]
