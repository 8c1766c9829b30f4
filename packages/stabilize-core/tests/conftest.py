"""Fixtures shared by stabilize-core's tests."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Any

import pytest

import stabilize
from stabilize import _plugins


def _drop_lazy_exports() -> None:
    # Read the names before clearing the cache: the group may hold a test's fake entries.
    lazy = {*_plugins.export_names(), *_plugins.OPTIONAL_EXPORTS} - set(stabilize.__all__)
    for name in lazy:
        stabilize.__dict__.pop(name, None)


@pytest.fixture(autouse=True)
def reset_plugins() -> Iterator[None]:
    """Forget discovered plugins and lazily cached exports around every test."""
    _plugins.group.cache_clear()
    _drop_lazy_exports()
    _plugins.group.cache_clear()
    yield
    _drop_lazy_exports()
    _plugins.group.cache_clear()


class FakeDistribution(importlib.metadata.Distribution):
    """An installed distribution that exists only in memory (metadata, entry points)."""

    def __init__(self, name: str, version: str, entry_points: dict[str, dict[str, str]]) -> None:
        self._files = {
            "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            "entry_points.txt": "".join(
                f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
                for group, entries in entry_points.items()
            ),
        }

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path: str | PathLike[str]) -> Path:
        return Path(path)


class FakePlugins:
    """The entry points ``importlib.metadata.entry_points()`` reports during one test."""

    def __init__(self) -> None:
        self.entry_points: list[importlib.metadata.EntryPoint] = []
        self.scans = 0

    def add(self, group: str, name: str, value: str) -> importlib.metadata.EntryPoint:
        """Add a hand-built entry point (it belongs to no distribution)."""
        ep = importlib.metadata.EntryPoint(name=name, value=value, group=group)
        self.entry_points.append(ep)
        return ep

    def add_dist(
        self, dist: str, version: str, entry_points: dict[str, dict[str, str]]
    ) -> FakeDistribution:
        """Add an installed distribution and the entry points it declares."""
        distribution = FakeDistribution(dist, version, entry_points)
        self.entry_points.extend(distribution.entry_points)
        return distribution

    def __call__(self, **params: Any) -> importlib.metadata.EntryPoints:
        self.scans += 1
        return importlib.metadata.EntryPoints(self.entry_points).select(**params)


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> FakePlugins:
    """Replace every installed plugin with the ones a test adds (none to start with)."""
    plugins = FakePlugins()
    monkeypatch.delenv(_plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.setattr(importlib.metadata, "entry_points", plugins)
    return plugins
