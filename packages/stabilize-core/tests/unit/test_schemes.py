"""The scheme map: which dialect package a database URL names."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from stabilize.backends import _schemes
from stabilize.backends._schemes import (
    DIALECTS,
    URL_FORMS,
    DialectEntry,
    dialect_for_url,
    driver_modules,
    find_entry,
)
from stabilize.connect import URL_FORMS as CONNECT_URL_FORMS
from stabilize.connect import check_database_url, describe_failure, open_database
from stabilize.errors import DatabaseUrlError


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("sqlite:///relative.db", "sqlite"),
        ("sqlite:////abs/file.db", "sqlite"),
        ("postgresql://user@host:5432/db", "postgres"),
        ("postgres://user@host/db", "postgres"),
        ("relative/file.db", "sqlite"),
        ("/abs/file.db", "sqlite"),
    ],
)
def test_each_scheme_names_its_dialect(url: str, dialect: str) -> None:
    assert find_entry(url).name == dialect
    loaded = dialect_for_url(url)
    assert loaded.name == dialect
    assert type(loaded).__module__.startswith(f"stabilize.backends.{dialect}.")


@pytest.mark.parametrize("url", ["mysql://user@host/db", "http://x", "x://y"])
def test_an_unknown_scheme_is_refused_naming_the_accepted_forms(url: str) -> None:
    with pytest.raises(DatabaseUrlError) as raised:
        find_entry(url)
    message = str(raised.value)
    assert repr(url) in message
    assert "sqlite:///path/to/file.db" in message
    assert "postgresql://user@host:5432/dbname" in message
    assert "postgres://" in message


def test_a_plain_path_is_a_sqlite_file_for_the_library_only() -> None:
    assert find_entry("data/wf.db").name == "sqlite"
    with pytest.raises(DatabaseUrlError, match=r"not a database URL: 'data/wf.db'"):
        find_entry("data/wf.db", plain_paths=False)
    with pytest.raises(DatabaseUrlError, match=r"not a database URL: 'data/wf.db'"):
        check_database_url("data/wf.db")


def test_the_commands_check_the_dialect_part_of_the_url() -> None:
    check_database_url("sqlite:///x.db")
    check_database_url("postgresql://u@h/db")
    with pytest.raises(DatabaseUrlError, match=r"invalid SQLite URL 'sqlite://x\.db'"):
        check_database_url("sqlite://x.db")
    with pytest.raises(DatabaseUrlError, match=r"not a database URL: 'postgresql:/x'"):
        check_database_url("postgresql:/x")  # the library would take it for a file path


def test_open_database_refuses_an_unknown_scheme(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatabaseUrlError, match="accepted: "):
        open_database("mysql://user@host/db")
    assert list(tmp_path.iterdir()) == []


def test_url_forms_list_every_dialect() -> None:
    assert URL_FORMS == CONNECT_URL_FORMS
    for entry in DIALECTS:
        assert entry.url_form in URL_FORMS


def test_driver_errors_are_the_dialects_drivers() -> None:
    assert driver_modules() == {"sqlite3", "psycopg", "psycopg_pool"}


def test_describe_failure_survives_an_unknown_scheme() -> None:
    assert describe_failure(RuntimeError("boom"), "mysql://x") == "RuntimeError: boom"


# -- a third dialect is a package and one entry --------------------------------------------


@dataclass
class FakeDialect:
    """A dialect whose databases are Python objects (what a package's ``DIALECT`` offers)."""

    name: str = "fake"
    opened: list[tuple[str, str | None, bool]] = field(default_factory=list)

    def check_url(self, url: str) -> None:
        if url == "fake://":
            raise DatabaseUrlError("a fake URL names a database after fake://")

    def open_database(self, url: str, schema: str | None, *, create: bool) -> tuple[Any, Any]:
        self.opened.append((url, schema, create))
        return ("store", url), ("queue", url)

    def describe_failure(self, exc: BaseException, url: str) -> str | None:
        return f"the fake database {url} failed"


def test_a_new_dialect_is_a_package_and_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDialect()
    package = types.ModuleType("fake_dialect_package")
    package.DIALECT = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_dialect_package", package)
    entry = DialectEntry("fake", ("fake://",), "fake_dialect_package:DIALECT", "fake://name")
    monkeypatch.setattr(_schemes, "DIALECTS", (*DIALECTS, entry))

    check_database_url("fake://db")
    with pytest.raises(DatabaseUrlError, match="after fake://"):
        check_database_url("fake://")
    opened: Any = open_database("fake://db", "ns", create=False)
    assert opened == (("store", "fake://db"), ("queue", "fake://db"))
    assert fake.opened == [("fake://db", "ns", False)]
    assert describe_failure(OSError("x"), "fake://db") == "the fake database fake://db failed"
