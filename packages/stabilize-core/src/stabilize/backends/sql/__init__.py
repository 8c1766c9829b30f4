"""SQL shipped as package data: named queries and numbered migrations per dialect.

Each dialect's files live in its package: ``stabilize/backends/<dialect>/sql/``.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from importlib.resources.abc import Traversable

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")


def _folder(dialect: str) -> Traversable:
    return resources.files(f"stabilize.backends.{dialect}").joinpath("sql")


@functools.cache
def queries(dialect: str) -> dict[str, str]:
    """Return the named queries of ``<dialect>/queries.sql`` (``-- name: x`` sections)."""
    text = _folder(dialect).joinpath("queries.sql").read_text("utf-8")
    parts = _NAME.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = body.strip().rstrip(";")
    return found


@functools.cache
def migrations(dialect: str) -> tuple[tuple[int, str], ...]:
    """Return ``(version, sql)`` for each ``NNNN_name.sql`` of the dialect, in order."""
    folder = _folder(dialect)
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text("utf-8")))
    found.sort()
    versions = [v for v, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return tuple(found)


def resource_text(dialect: str, name: str) -> str:
    """Return the text of another SQL file of the dialect."""
    return _folder(dialect).joinpath(name).read_text("utf-8")
