"""Journal mode and synchronous level of SQLite files, from the environment."""

from __future__ import annotations

import os

JOURNAL_MODES = frozenset({"DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF"})
SYNCHRONOUS_LEVELS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})


def sqlite_settings(env: dict[str, str] | None = None) -> tuple[str | None, str]:
    """Return (journal mode or None to keep the file's, synchronous level) from the env.

    Raises:
        ValueError: an environment variable holds an unknown value.
    """
    env = dict(os.environ) if env is None else env
    journal = env.get("STABILIZE_SQLITE_JOURNAL_MODE", "").strip().upper() or None
    if journal is not None and journal not in JOURNAL_MODES:
        raise ValueError(
            f"STABILIZE_SQLITE_JOURNAL_MODE={journal!r} is not one of {sorted(JOURNAL_MODES)}"
        )
    sync = env.get("STABILIZE_SQLITE_SYNCHRONOUS", "").strip().upper()
    if not sync:
        sync = "NORMAL" if journal == "WAL" else "FULL"
    if sync not in SYNCHRONOUS_LEVELS:
        raise ValueError(
            f"STABILIZE_SQLITE_SYNCHRONOUS={sync!r} is not one of {sorted(SYNCHRONOUS_LEVELS)}"
        )
    return journal, sync
