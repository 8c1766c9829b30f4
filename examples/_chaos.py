"""Shared by the examples' SIGKILL runs (``--chaos``): a ledger of every model and tool
call, kept outside the engine to check its promise, and the kill itself.

Each call appends a ``start`` line to the ledger before it runs and an ``end`` line once it
returned, with its key and the worker's pid. A model call's key is a digest of the
conversation's opening (system and first user message) plus the number of assistant turns
it already holds; a tool call's key is the idempotency key the agent gave it. After a
crash, a call whose result the engine had committed must have exactly one ``start``.

A tool calls :func:`hang_once` to stop the first worker in the middle of its call, and
the driver calls :func:`kill_at_marker` to kill that worker with SIGKILL once it is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

_lock = threading.Lock()


class Ledger:
    """An append-only JSON-lines file of call attempts, shared by every worker process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, kind: str, key: str, phase: str, **extra: Any) -> None:
        line = json.dumps({"kind": kind, "key": key, "phase": phase, "pid": os.getpid(), **extra})
        with _lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def model_key(messages: Iterable[Mapping[str, Any]]) -> str:
    """The key of the model call that answers ``messages``."""
    listed = list(messages)
    opening = [(m.get("role"), m.get("content")) for m in listed[:2]]
    digest = hashlib.sha256(json.dumps(opening).encode()).hexdigest()[:12]
    turns = sum(1 for m in listed if m.get("role") == "assistant")
    return f"{digest}:{turns}"


class LedgerTransport(httpx.BaseTransport):
    """An httpx transport that records every chat request in the ledger, then forwards it."""

    def __init__(self, inner: httpx.BaseTransport, ledger: Ledger) -> None:
        self.inner = inner
        self.ledger = ledger

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        key = model_key(body.get("messages") or [])
        self.ledger.record("model", key, "start")
        response = self.inner.handle_request(request)
        response.read()
        self.ledger.record("model", key, "end", status=response.status_code)
        return response

    def close(self) -> None:
        self.inner.close()


@dataclass
class Verdict:
    """What the ledger shows about a run interrupted by a SIGKILL."""

    ok: bool
    committed_before_kill: int = 0
    repeated: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"ledger: {self.committed_before_kill} model/tool calls were committed before the "
            "kill; each appears once"
            if not self.problems
            else "ledger: PROBLEMS FOUND"
        ]
        for r in self.repeated:
            out.append(
                f"ledger: the interrupted {r['kind']} call {r['key']} ran again after the kill "
                f"(first attempt by the killed worker {r['pids'][0]}, then {r['pids'][1]})"
            )
        out.extend(f"ledger: {p}" for p in self.problems)
        return out


def committed_calls(stages: Iterable[Any]) -> set[tuple[str, str]]:
    """The model and tool calls whose results a workflow's stages hold (as stored)."""
    done: set[tuple[str, str]] = set()
    for state in (task.state for stage in stages for task in stage.tasks):
        if "messages" not in state:  # not an agent's checkpoint
            continue
        messages = state.get("messages") or []
        for i, message in enumerate(messages):
            if message.get("role") == "assistant":
                done.add(("model", model_key(messages[:i])))
        for call in state.get("invocations") or []:
            if call.get("status") in ("done", "error"):
                done.add(("tool", call["idempotency_key"]))
    return done


def verify(ledger: Ledger, committed: set[tuple[str, str]], killed_pid: int) -> Verdict:
    """Check that no call committed before the kill ran twice, and that only calls the
    killed worker had in flight ran again."""
    starts: dict[tuple[str, str], list[int]] = {}
    for e in ledger.entries():
        if e["phase"] == "start":
            starts.setdefault((e["kind"], e["key"]), []).append(e["pid"])
    verdict = Verdict(ok=True, committed_before_kill=len(committed))
    for call in sorted(committed):
        n = len(starts.get(call, []))
        if n != 1:
            verdict.problems.append(f"committed {call[0]} call {call[1]} started {n} times")
    for (kind, key), pids in sorted(starts.items()):
        if len(pids) == 1:
            continue
        counts = Counter(pids)
        if len(pids) > 2 or pids[0] != killed_pid or counts[killed_pid] != 1:
            verdict.problems.append(f"{kind} call {key} started by {pids}")
        elif (kind, key) not in committed:
            verdict.repeated.append({"kind": kind, "key": key, "pids": pids})
    verdict.ok = not verdict.problems
    return verdict


def hang_once(marker: Path, key: str) -> None:
    """Write ``marker`` and block, if no call of the run has written it yet.

    Only the first call to get here blocks (the marker is linked into place exclusively): the chaos
    driver kills its worker in the middle of that call, and the call that runs again after
    the kill goes on.
    """
    # Written whole under another name, then linked into place: the driver kills as soon as
    # the marker exists, so the marker must never exist without its content.
    # Calls of several threads of one worker get here at once: each drafts its own file.
    draft = marker.with_name(f"{marker.name}.{os.getpid()}.{threading.get_ident()}")
    draft.write_text(f"{os.getpid()} {key}\n")
    try:
        os.link(draft, marker)  # fails if another call got here first
    except FileExistsError:
        return
    finally:
        draft.unlink()
    time.sleep(120)  # the driver kills us long before this ends


def kill_at_marker(worker: subprocess.Popen[bytes], marker: Path, timeout: float = 60.0) -> int:
    """Kill ``worker`` with SIGKILL as soon as ``marker`` exists; return its pid.

    Raises:
        RuntimeError: The worker ended, or ``timeout`` seconds passed, before the marker
            was written (the worker is killed then too).
    """
    deadline = time.monotonic() + timeout
    while not marker.exists():  # written by the tool itself, once it runs
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            worker.wait()
            raise RuntimeError(f"worker {worker.pid} never reached the call that hangs")
        time.sleep(0.02)
    worker.kill()
    worker.wait()
    return worker.pid
