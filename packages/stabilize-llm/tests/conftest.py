"""Fixtures of stabilize-llm's tests: a real local model server speaking both chat APIs.

The server is written independently of the library's wire code (hand-built provider JSON),
so that the client is checked against the formats, not against itself.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stabilize.events import configure_event_sourcing

HANG_GUARD = 30.0  # seconds: only guards against hangs, never asserted on


@dataclass
class Turn:
    """What the server answers to one request."""

    content: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    error: str | None = None
    hold: threading.Event | None = None  # answer only once this is set
    prompt_tokens: int = 7
    completion_tokens: int = 3


@dataclass
class Received:
    """One request the server got."""

    api: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def turn(self) -> int:
        return sum(1 for m in self.body.get("messages", []) if m.get("role") == "assistant")

    @property
    def prompt(self) -> str:
        users = [m for m in self.body.get("messages", []) if m.get("role") == "user"]
        return str(users[0].get("content", "")) if users else ""


Responder = Callable[[Received], "Turn | dict[str, Any] | str"]


def as_turn(item: Turn | dict[str, Any] | str) -> Turn:
    """Tests describe turns as strings (an answer) or dicts of :class:`Turn` fields."""
    if isinstance(item, Turn):
        return item
    if isinstance(item, str):
        return Turn(item)
    return Turn(**item)


class ModelServer:
    """A chat server on 127.0.0.1 speaking OpenAI (``/v1/chat/completions``) and Ollama
    (``/api/chat``), streamed or not, answering from a per-test responder."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.hooks: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        self.responder: Responder = lambda r: "hello"
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/hook":  # a worker's tool reporting that it started
                    with server.arrived:
                        server.hooks.append(body)
                        server.arrived.notify_all()
                    self._send(200, {})
                    return
                if self.path == "/v1/chat/completions":
                    api = "openai"
                elif self.path == "/api/chat":
                    api = "ollama"
                else:
                    self._send(404, {"error": f"no route {self.path}"})
                    return
                received = Received(api, self.path, dict(self.headers.items()), body)
                turn = as_turn(server.responder(received))
                with server.arrived:
                    server.requests.append(received)
                    server.arrived.notify_all()
                if turn.hold is not None:
                    turn.hold.wait(HANG_GUARD)
                # The client may have been killed while we held the answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer(api, body, turn)

            def _send(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, api: str, body: dict[str, Any], turn: Turn) -> None:
                if turn.status != 200:
                    err: Any = {"message": turn.error, "type": "invalid_request_error"}
                    self._send(turn.status, {"error": err if api == "openai" else turn.error})
                    return
                model = body.get("model", "?")
                if not body.get("stream"):
                    self._send(
                        200, _openai(model, turn) if api == "openai" else _ollama(model, turn)
                    )
                    return
                self.send_response(200)
                kind = "text/event-stream" if api == "openai" else "application/x-ndjson"
                self.send_header("Content-Type", kind)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                pieces = (
                    _openai_stream(model, turn) if api == "openai" else _ollama_stream(model, turn)
                )
                for piece in pieces:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    def script(self, turns: list[Turn | dict[str, Any] | str]) -> None:
        """Answer by turn: the request whose conversation holds n assistant turns gets turns[n]."""
        items = [as_turn(t) for t in turns]
        self.responder = lambda r: items[r.turn]

    def wait_for(self, predicate: Callable[[ModelServer], bool]) -> None:
        """Block until ``predicate(server)`` holds (checked on every request)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: predicate(self), HANG_GUARD):
                raise AssertionError("the model server did not get the expected requests")

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _openai(model: str, turn: Turn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.content or None}
    if turn.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}_{name}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(turn.tool_calls)
        ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": turn.completion_tokens,
            "total_tokens": turn.prompt_tokens + turn.completion_tokens,
        },
    }


def _ollama(model: str, turn: Turn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.content}
    if turn.tool_calls:
        message["tool_calls"] = [
            {"function": {"name": name, "arguments": args}} for name, args in turn.tool_calls
        ]
    return {
        "model": model,
        "created_at": "2025-01-01T00:00:00Z",
        "message": message,
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": turn.prompt_tokens,
        "eval_count": turn.completion_tokens,
    }


def _chars(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _event(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _openai_stream(model: str, turn: Turn) -> Iterator[bytes]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model}
    yield b": keep-alive comment\n\n"
    first = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    yield f"data: {json.dumps(first)}\n\n".encode()
    for piece in _chars(turn.content):
        chunk = {**head, "choices": [{"index": 0, "delta": {"content": piece}}]}
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    for i, (name, args) in enumerate(turn.tool_calls):
        # OpenAI sends the name first, then the arguments in fragments.
        start = {"index": i, "id": f"call_{i}_{name}", "type": "function"}
        start["function"] = {"name": name, "arguments": ""}
        yield _event({**head, "choices": [{"index": 0, "delta": {"tool_calls": [start]}}]})
        for frag in _chars(json.dumps(args), 5):
            part = {"index": i, "function": {"arguments": frag}}
            yield _event({**head, "choices": [{"index": 0, "delta": {"tool_calls": [part]}}]})
    usage = {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
    }
    yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _ollama_stream(model: str, turn: Turn) -> Iterator[bytes]:
    for piece in _chars(turn.content):
        line = {"model": model, "message": {"role": "assistant", "content": piece}, "done": False}
        yield json.dumps(line).encode() + b"\n"
    if turn.tool_calls:
        calls = [{"function": {"name": n, "arguments": a}} for n, a in turn.tool_calls]
        line = {
            "model": model,
            "message": {"role": "assistant", "content": "", "tool_calls": calls},
            "done": False,
        }
        yield json.dumps(line).encode() + b"\n"
    last = {
        "model": model,
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "prompt_eval_count": turn.prompt_tokens,
        "eval_count": turn.completion_tokens,
    }
    yield json.dumps(last).encode() + b"\n"


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    server = ModelServer()
    yield server
    server.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'llm.db'}"


@pytest.fixture(autouse=True)
def no_event_sourcing() -> Iterator[None]:
    yield
    configure_event_sourcing()


@pytest.fixture(autouse=True)
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys and hosts from the developer's environment must not leak into tests."""
    for name in ("OPENAI_API_KEY", "OLLAMA_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes started by a test; killed and reaped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=HANG_GUARD)
