"""``stabilize serve`` as a subprocess: refuses unsafe settings, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from websockets.exceptions import InvalidStatus

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make gateway_helpers importable

from gateway_helpers import HANG_GUARD, logged, open_client, pipeline, sequences

from stabilize.streaming.gateway import TOKEN_ENV

if TYPE_CHECKING:
    from conftest import StreamEngine

pytest_plugins = ["gateway_fixtures"]

LISTENING = re.compile(r"listening on (http://\S+) \(WebSocket (ws://\S+)\)")


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stabilize", "serve", *args]


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    return env


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    """Gateway processes a test starts; killed and reaped at teardown."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=HANG_GUARD)


async def start_server(
    servers: list[subprocess.Popen[str]], *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, str]:
    """Start ``stabilize serve`` on port 0; returns it with its HTTP and WebSocket URLs."""
    proc = subprocess.Popen(
        serve_command(*args, "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or clean_env(),
    )
    servers.append(proc)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), HANG_GUARD)
    match = LISTENING.search(line)
    if match is None:
        _, err = proc.communicate(timeout=HANG_GUARD)
        raise AssertionError(f"no address on stdout: {line!r}; stderr: {err}")
    return proc, match.group(1), match.group(2)


@pytest.mark.parametrize("host", ["0.0.0.0", ""])
def test_non_loopback_without_token_refuses_to_start(host: str, tmp_path: Path) -> None:
    done = subprocess.run(
        serve_command("--db-url", f"sqlite:///{tmp_path / 'x.db'}", "--host", host),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=HANG_GUARD,
    )
    assert done.returncode == 2
    assert "refusing to serve" in done.stderr
    assert TOKEN_ENV in done.stderr
    assert not (tmp_path / "x.db").exists()  # refused before touching the database


def test_missing_database_file_is_an_error(tmp_path: Path) -> None:
    done = subprocess.run(
        serve_command("--db-url", f"sqlite:///{tmp_path / 'missing.db'}"),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=HANG_GUARD,
    )
    assert done.returncode == 1
    assert f"no stabilize database at {tmp_path / 'missing.db'}" in done.stderr
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_serves_the_log_and_stops_on_sigterm(
    engine: StreamEngine, servers: list[subprocess.Popen[str]]
) -> None:
    wf = pipeline("chatty", "step")
    engine.orchestrator().start(wf)
    engine.wait_until(lambda: engine.status(wf.id) == "SUCCEEDED", "the workflow to end")
    proc, http_url, ws_url = await start_server(servers, "--db-url", engine.url)
    async with open_client(ws_url) as client:
        await client.subscribe(workflow_id=wf.id)
        frames = await client.until_terminal()
    assert sequences(frames) == logged(engine, wf.id)

    def health() -> dict[str, object]:
        with urllib.request.urlopen(f"{http_url}/healthz", timeout=HANG_GUARD) as response:
            result: dict[str, object] = json.loads(response.read())
            return result

    assert (await asyncio.to_thread(health))["status"] == "ok"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, err
    assert "stopped" in out


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_token_from_file_or_environment(
    db: StreamEngine, servers: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    _, _, ws_url = await start_server(servers, "--db-url", db.url, "--token-file", str(token_file))
    _, _, ws_env = await start_server(
        servers, "--db-url", db.url, env={**clean_env(), TOKEN_ENV: "from-env"}
    )
    for url, token in ((ws_url, "from-file"), (ws_env, "from-env")):
        with pytest.raises(InvalidStatus) as refused:
            async with open_client(url):
                pass
        assert refused.value.response.status_code == 401
        async with open_client(f"{url}?token={token}") as client:
            await client.send(type="ping")
            assert (await client.expect("pong"))["type"] == "pong"


def test_the_command_imports_websockets_only_when_it_runs() -> None:
    code = (
        "import sys, stabilize.streaming.gateway, stabilize.streaming.gateway.cli;"
        "assert 'websockets' not in sys.modules, 'websockets imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_allowed_hosts_origins_and_the_connection_limit(
    db: StreamEngine, servers: list[subprocess.Popen[str]]
) -> None:
    _, _, ws_url = await start_server(
        servers,
        "--db-url",
        db.url,
        "--allowed-host",
        "gw.example.com",
        "--allowed-origin",
        "https://app.example",
        "--max-connections",
        "1",
    )
    port = int(ws_url.rsplit(":", 1)[1].split("/")[0])

    def named(host: str) -> socket.socket:
        del host  # every name reaches 127.0.0.1 here, as a rebound one would
        return socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)

    for host, origin in (("attacker.example", None), ("gw.example.com", "https://evil.example")):
        with pytest.raises(InvalidStatus) as refused:
            async with open_client(f"ws://{host}:{port}/ws", sock=named(host), origin=origin):
                pass
        assert refused.value.response.status_code == 403
    url = f"ws://gw.example.com:{port}/ws"
    async with open_client(url, sock=named("gw"), origin="https://app.example") as client:
        await client.send(type="ping")
        await client.expect("pong")
        with pytest.raises(InvalidStatus) as refused:
            async with open_client(ws_url):
                pass
        assert refused.value.response.status_code == 503
        assert b"--max-connections" in (refused.value.response.body or b"")


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_limit_that_is_not_positive_is_refused(db: StreamEngine) -> None:
    done = subprocess.run(
        serve_command("--db-url", db.url, "--max-connections", "0"),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=HANG_GUARD,
    )
    assert done.returncode == 2
    assert "max_connections must be positive, not 0" in done.stderr
