"""Which dialect package a database URL names: the one place outside them that names them.

A dialect is a package ``stabilize.backends.<name>`` whose ``DIALECT`` object has the
shape of :class:`~stabilize.backends._dialect.Dialect`; a new one is that package and one
line in :data:`DIALECTS`. Packages are imported when a URL of theirs is first used, so
naming a dialect here loads nothing of it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from stabilize.errors import DatabaseUrlError

if TYPE_CHECKING:
    from stabilize.backends._dialect import Dialect


@dataclass(frozen=True)
class DialectEntry:
    """One dialect: what its URLs look like and where its entry object is.

    Attributes:
        name: The dialect's name.
        prefixes: The beginnings of its URLs (``sqlite:``, ``postgresql://``, ...).
        entry: ``"module:attribute"`` of its :class:`Dialect` object.
        url_form: How its URLs are written (for messages).
        drivers: The top-level modules of its driver, whose errors are failures of the
            database rather than bugs.
        plain_paths: A URL without a scheme is a file path of this dialect (library
            calls only; the commands want a scheme).
    """

    name: str
    prefixes: tuple[str, ...]
    entry: str
    url_form: str
    drivers: tuple[str, ...] = ()
    plain_paths: bool = False

    def load(self) -> Dialect:
        """Import the dialect package and return its entry object."""
        module, _, attribute = self.entry.partition(":")
        return cast("Dialect", getattr(importlib.import_module(module), attribute))


DIALECTS = (
    DialectEntry(
        "sqlite",
        ("sqlite:",),
        "stabilize.backends.sqlite:DIALECT",
        "sqlite:///path/to/file.db",
        drivers=("sqlite3",),
        plain_paths=True,
    ),
    DialectEntry(
        "postgres",
        ("postgresql://", "postgres://"),
        "stabilize.backends.postgres:DIALECT",
        "postgresql://user@host:5432/dbname or postgres://...",
        drivers=("psycopg", "psycopg_pool"),
    ),
)
"""The dialects stabilize knows, by the URLs that name them."""

URL_FORMS = ", ".join(entry.url_form for entry in DIALECTS)
"""The URL forms accepted (for messages)."""


def find_entry(url: str, *, plain_paths: bool = True) -> DialectEntry:
    """The dialect whose URLs ``url`` looks like.

    Args:
        url: A database URL (or, with ``plain_paths``, a file path).
        plain_paths: Take a URL without ``://`` for a path of the dialect that has files.

    Raises:
        DatabaseUrlError: no dialect has such URLs (naming the accepted forms).
    """
    for entry in DIALECTS:
        if url.startswith(entry.prefixes):
            return entry
    if plain_paths and "://" not in url:
        for entry in DIALECTS:
            if entry.plain_paths:
                return entry
    raise DatabaseUrlError(f"not a database URL: {url!r} (accepted: {URL_FORMS})")


def dialect_for_url(url: str, *, plain_paths: bool = True) -> Dialect:
    """The entry object of the dialect ``url`` names (its package imported if needed).

    Raises:
        DatabaseUrlError: no dialect has such URLs (naming the accepted forms).
    """
    return find_entry(url, plain_paths=plain_paths).load()


def driver_modules() -> frozenset[str]:
    """The top-level modules of every dialect's driver."""
    return frozenset(module for entry in DIALECTS for module in entry.drivers)
