"""Worker processes that tests start, watch and always reap (not a test).

The integration tests (``integration/conftest.py``) and the crash tests
(``chaos/conftest.py``) build their ``workers`` fixtures on :class:`ProcessTracker`;
``tests/conftest.py``, loaded before them, puts this directory on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

DEADLINE_S = 30.0
"""How long a test waits for a process at most (a guard against hangs only)."""


@dataclass
class Spawned:
    """A started process and the files its output goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    files: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        """Stdout and the tail of stderr, for assertion messages."""
        out = self.out_path.read_text(errors="replace")
        return (
            f"--- {self.name} (pid {self.pid}, rc={self.proc.returncode}) stdout:\n{out}"
            f"--- stderr:\n{self.stderr()[-6000:]}"
        )

    def kill(self) -> None:
        """SIGKILL the process and reap it (its pid is then free)."""
        self.proc.kill()
        self.proc.wait()

    def wait_exit(self, timeout: float = DEADLINE_S) -> int:
        """Wait for the process to exit on its own; return its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s\n{self.output()}"
            ) from None


class ProcessTracker:
    """Starts Python scripts as processes (SQLite in WAL mode); reaps them all at close."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Spawned] = []

    def start(self, script: Path, args: list[str], name: str | None = None) -> Spawned:
        """Start ``python script *args``; its output goes to ``<name>.out`` / ``.err``."""
        name = name or f"worker{len(self.started)}"
        out_path = self.directory / f"{name}.out"
        err_path = self.directory / f"{name}.err"
        out, err = out_path.open("wb"), err_path.open("wb")
        env = {**os.environ, "STABILIZE_SQLITE_JOURNAL_MODE": "WAL"}
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        spawned = Spawned(name, proc, out_path, err_path, [out, err])
        self.started.append(spawned)
        return spawned

    def errors(self) -> str:
        """What every process wrote, for assertion messages."""
        return "\n".join(s.output() for s in self.started)

    def close(self) -> None:
        """Kill the processes still running and reap them."""
        for spawned in self.started:
            if spawned.proc.poll() is None:
                spawned.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                spawned.proc.wait(timeout=10)
            for f in spawned.files:
                f.close()
