"""Which sites may reach a gateway without a token: Host names and origins (DNS rebinding).

A page of ``attacker.example`` whose name the attacker re-points at 127.0.0.1 reaches a
gateway on the user's machine with its own name in ``Host`` and ``Origin``: without a
token, only loopback names (and configured ones) are answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import InvalidStatus

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make gateway_helpers importable

from gateway_helpers import HANG_GUARD, Client, GatewayFactory, open_client, pipeline

from stabilize.streaming.gateway import Gateway
from stabilize.streaming.gateway._auth import host_allowed, origin_trusted, split_host

if TYPE_CHECKING:
    from conftest import StreamEngine

pytest_plugins = ["gateway_fixtures"]

TOKEN = "s3cret-token"


# -- the rules (no sockets) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:8765", ("localhost", "8765")),
        ("127.0.0.1:80", ("127.0.0.1", "80")),
        ("[::1]:8765", ("::1", "8765")),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_split_host(header: str, expected: tuple[str, str | None]) -> None:
    assert split_host(header) == expected


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("localhost:8765", True),
        ("localhost.:8765", True),
        ("127.0.0.1", True),
        ("127.9.9.9:1", True),
        ("[::1]:8765", True),
        ("[::1]", True),
        (None, False),
        ("", False),
        ("attacker.example", False),
        ("attacker.example:8765", False),
        ("localhost.attacker.example", False),
        ("127.0.0.1.attacker.example", False),
        ("0.0.0.0:8765", False),
        ("192.168.1.10:8765", False),
        ("gw.example.com", False),
    ],
)
def test_loopback_hosts_only(host: str | None, allowed: bool) -> None:
    assert host_allowed(host, ()) is allowed


def test_configured_hosts() -> None:
    assert host_allowed("GW.example.com:8443", ["gw.example.com"])  # any port
    assert host_allowed("gw.example.com:8443", ["gw.example.com:8443"])
    assert not host_allowed("gw.example.com:9999", ["gw.example.com:8443"])
    assert not host_allowed("other.example.com", ["gw.example.com"])


def test_trusted_origins() -> None:
    for origin in ("http://localhost:3000", "http://127.0.0.1:8765", "http://[::1]:1"):
        assert origin_trusted(origin, "127.0.0.1:8765", ())
    assert origin_trusted("https://gw.example.com", "gw.example.com", ())  # its own page
    assert origin_trusted("https://app.example", "127.0.0.1:8765", ["https://app.example"])
    assert origin_trusted("https://any.example", "127.0.0.1:8765", ["*"])
    assert not origin_trusted("http://attacker.example", "127.0.0.1:8765", ())
    assert not origin_trusted("null", "127.0.0.1:8765", ())


# -- over real connections -----------------------------------------------------------------

sqlite_only = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


@asynccontextmanager
async def as_site(gateway: Gateway, host: str, **kwargs: Any) -> AsyncIterator[Client]:
    """A client that reaches the gateway on 127.0.0.1 under the name ``host`` (``Host``)."""
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=HANG_GUARD)
    async with open_client(f"ws://{host}:{gateway.port}/ws", sock=sock, **kwargs) as client:
        yield client


async def refused_as(gateway: Gateway, host: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as caught:
        async with as_site(gateway, host, **kwargs):
            pass
    response = caught.value.response
    return response.status_code, json.loads(response.body or b"{}")


def http_get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HANG_GUARD) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def still_streams(db: StreamEngine, gateway: Gateway) -> None:
    """A loopback client still subscribes and gets the workflow's events."""
    wf = pipeline("step")
    db.orchestrator().start(wf)
    async with open_client(gateway.url) as client:
        await client.subscribe(workflow_id=wf.id)
        assert (await client.recv())["event_type"] == "workflow.created"


@sqlite_only
async def test_a_rebound_name_is_refused(db: StreamEngine, start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(db.events)
    wf = pipeline("step")
    db.orchestrator().start(wf)
    # The attack: the page's own name in Host, and its own origin (which matches it).
    status, body = await refused_as(gateway, "attacker.example", origin="http://attacker.example")
    assert status == 403
    assert body["code"] == "forbidden_host"
    assert "Host 'attacker.example:" in body["message"]
    assert "--allowed-host attacker.example" in body["message"]
    status, body = await refused_as(gateway, "attacker.example")  # no Origin: the same
    assert (status, body["code"]) == (403, "forbidden_host")
    # The page route serves workflow data too: refused the same way.
    page = f"http://127.0.0.1:{gateway.port}/workflows/{wf.id}"
    status, raw = await asyncio.to_thread(http_get, page, {"Host": "attacker.example"})
    assert (status, json.loads(raw)["code"]) == (403, "forbidden_host")
    status, raw = await asyncio.to_thread(http_get, page, {"Host": f"localhost:{gateway.port}"})
    assert status == 200
    assert b"<title>stabilize" in raw
    event = f"http://127.0.0.1:{gateway.port}/workflows/{wf.id}/events/1"
    status, raw = await asyncio.to_thread(http_get, event, {"Host": "attacker.example"})
    assert (status, json.loads(raw)["code"]) == (403, "forbidden_host")
    status, raw = await asyncio.to_thread(http_get, event, {})
    assert (status, json.loads(raw)["event_type"]) == (200, "workflow.created")
    for missing in (f"{wf.id}/events/99", "no-such-workflow/events/1", "a%00b/events/1"):
        url = f"http://127.0.0.1:{gateway.port}/workflows/{missing}"
        status, raw = await asyncio.to_thread(http_get, url, {})
        assert (status, json.loads(raw)["code"]) == (404, "not_found"), missing
    # Health reveals no workflow data: probes with any name still get it.
    health = f"http://127.0.0.1:{gateway.port}/healthz"
    status, raw = await asyncio.to_thread(http_get, health, {"Host": "attacker.example"})
    assert (status, json.loads(raw)["status"]) == (200, "ok")
    # Loopback names, with or without the port, are answered.
    for name in ("localhost", "127.0.0.1", "[::1]"):
        async with as_site(gateway, name) as client:
            await client.subscribe(workflow_id=wf.id)
            assert (await client.recv())["event_type"] == "workflow.created"


@sqlite_only
async def test_a_foreign_origin_is_refused_on_a_loopback_name(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(db.events)
    status, body = await refused_as(gateway, "127.0.0.1", origin="http://attacker.example")
    assert (status, body["code"]) == (403, "forbidden_origin")
    assert "--allowed-origin http://attacker.example" in body["message"]
    status, raw = await asyncio.to_thread(
        http_get,
        f"{gateway.http_url}/workflows/abc",
        {"Origin": "http://attacker.example"},
    )
    assert (status, json.loads(raw)["code"]) == (403, "forbidden_origin")
    # A local development server's page may connect.
    async with as_site(gateway, "127.0.0.1", origin="http://localhost:3000") as client:
        await client.send(type="ping")
        await client.expect("pong")
    await still_streams(db, gateway)


@sqlite_only
async def test_configured_hosts_and_origins_are_answered(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(
        db.events, allowed_hosts=["gw.example.com"], allowed_origins=["https://app.example"]
    )
    wf = pipeline("step")
    db.orchestrator().start(wf)
    async with as_site(gateway, "gw.example.com", origin="https://app.example") as client:
        await client.subscribe(workflow_id=wf.id)
        assert (await client.recv())["event_type"] == "workflow.created"
    own = f"http://gw.example.com:{gateway.port}"  # the gateway's own page under that name
    async with as_site(gateway, "gw.example.com", origin=own) as client:
        await client.send(type="ping")
        await client.expect("pong")
    status, body = await refused_as(gateway, "gw.example.com", origin="https://evil.example")
    assert (status, body["code"]) == (403, "forbidden_origin")
    assert (await refused_as(gateway, "attacker.example"))[0] == 403


@sqlite_only
async def test_with_a_token_any_name_is_answered(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    # The token is what a rebinding page cannot present: names need no check then.
    gateway = await start_gateway(db.events, token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with as_site(gateway, "gw.example.com", additional_headers=headers) as client:
        await client.send(type="ping")
        await client.expect("pong")
    status, _ = await refused_as(gateway, "attacker.example")
    assert status == 401


# -- duplicate headers ---------------------------------------------------------------------


async def raw_request(port: int, head: str) -> tuple[int, dict[str, Any]]:
    """Send a raw HTTP request head; the status and JSON body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), HANG_GUARD)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body or b"{}")


UPGRADE = (
    "Upgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n"
    "Sec-WebSocket-Version: 13\n"
)


@sqlite_only
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Host", "localhost"),
        ("Origin", "http://localhost"),
        ("Authorization", f"Bearer {TOKEN}"),
    ],
)
async def test_duplicate_headers_get_400_and_no_traceback(
    db: StreamEngine,
    start_gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
    name: str,
    value: str,
) -> None:
    gateway = await start_gateway(db.events)
    twice = f"{name}: {value}\n{name}: {value}\n"
    host = "" if name == "Host" else "Host: localhost\n"
    with caplog.at_level(logging.INFO):
        for path, extra in (("/ws", UPGRADE), ("/workflows/abc", ""), ("/healthz", "")):
            status, body = await raw_request(
                gateway.port, f"GET {path} HTTP/1.1\n{host}{twice}{extra}"
            )
            assert status == 400, (path, body)
            assert body["code"] == "bad_request"
            assert body["message"] == f"the request has 2 {name} headers: send exactly one"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert all(r.exc_info is None for r in caplog.records)
    await still_streams(db, gateway)
