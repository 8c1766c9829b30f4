"""SQLite files: URLs to paths, and opening a file without ever creating it."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from stabilize.errors import DatabaseNotFoundError


def sqlite_path(url: str) -> str:
    """Turn ``sqlite:///relative.db``, ``sqlite:////abs.db`` or a plain path into a path.

    Raises:
        ValueError: the URL has another scheme or no path.
    """
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/"):
            raise ValueError(f"invalid SQLite URL {url!r}: expected sqlite:///path/to/file.db")
        path = rest[1:]
    elif "://" in url:
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    else:
        path = url
    path = path.split("?", 1)[0]
    if not path:
        raise ValueError(f"invalid SQLite URL {url!r}: no file path")
    if path == ":memory:":
        return path
    return str(Path(path).expanduser().resolve())


def connect_existing(path: str) -> sqlite3.Connection:
    """Open the SQLite file at ``path`` without ever creating it.

    Raises:
        DatabaseNotFoundError: there is no such file.
    """
    if path == ":memory:":
        raise DatabaseNotFoundError("an in-memory SQLite database holds no stabilize database yet")
    if not Path(path).is_file():
        raise DatabaseNotFoundError(
            f"no stabilize database at {path} (run 'stabilize mg-up --db-url sqlite:///{path}' "
            "to create one)"
        )
    # mode=rw: a file deleted since the check above must not come back empty.
    uri = f"file:{urllib.parse.quote(path)}?mode=rw"
    try:
        return sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=60
        )
    except sqlite3.OperationalError as exc:
        raise DatabaseNotFoundError(f"cannot open {path}: {exc}") from None


def check_directory(path: str) -> None:
    """Refuse to create a database file in a directory that does not exist.

    A typo in a URL must not leave a directory tree behind (issue 15): the directory is
    the user's to create.

    Raises:
        DatabaseNotFoundError: naming the file and the missing directory.
    """
    parent = Path(path).parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise DatabaseNotFoundError(
            f"cannot create the SQLite database {path}: the directory {parent} {what} "
            "(create it first, or check the path in the URL)"
        )
