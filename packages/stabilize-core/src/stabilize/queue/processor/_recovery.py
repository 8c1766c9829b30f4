"""Who holds a lease: worker identities and detecting dead workers on this host."""

from __future__ import annotations

import os
import socket

from ulid import ULID


def new_owner() -> str:
    """A worker identity: ``host:pid:nonce`` (the nonce tells processors of one process apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{ULID()}"


def owner_is_dead(owner: str, live_owners: set[str]) -> bool:
    """True when ``owner`` is a worker on this host whose process no longer runs.

    Owners on other hosts are never judged dead here; their leases are adopted when they
    expire. ``live_owners`` are the processors alive in this process.
    """
    host, _, rest = owner.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in live_owners
    return not _process_alive(pid)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child that was not reaped yet is a zombie: it runs nothing
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True
