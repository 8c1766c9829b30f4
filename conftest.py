"""Settings for every member's tests: PostgreSQL tests without a server, in one line.

Without ``STABILIZE_TEST_PG_URL`` each PostgreSQL test skips. Skipped from a fixture, each
would print its own line under ``-ra`` (pytest reports a fixture's skip at the test);
skipped here, before any fixture runs, they share this file's location and their reason,
so ``-ra`` folds them into one line with their count. CI sets the variable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

PG_URL_ENV = "STABILIZE_TEST_PG_URL"
PG_SKIP_REASON = (
    f"PostgreSQL tests need a server: {PG_URL_ENV} is not set "
    "(e.g. postgresql://root@127.0.0.1:5432/test; see README.md, Running the tests)"
)


def needs_postgres(item: pytest.Item) -> bool:
    """The ``postgres`` marker, the ``pg_url`` fixture or a ``"postgres"`` backend param."""
    if item.get_closest_marker("postgres") is not None:
        return True
    if "pg_url" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "postgres" in callspec.params.values()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a PostgreSQL test when no server URL is set (one ``-ra`` line for them all)."""
    if not os.environ.get(PG_URL_ENV) and needs_postgres(item):
        pytest.skip(PG_SKIP_REASON)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    """Give every PostgreSQL skip one location, so ``-ra`` prints one line for them all.

    Those skipped above and any a test body or a member's fixture still raises.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and f"{PG_URL_ENV} is not set" in longrepr[2]:
        report.longrepr = (__file__, pytest_runtest_setup.__code__.co_firstlineno, PG_SKIP_REASON)
