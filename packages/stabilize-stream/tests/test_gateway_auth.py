"""Who may connect: tokens (header or query), the loopback rule, origins; health and page."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import InvalidStatus

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make gateway_helpers importable

from gateway_helpers import GatewayFactory, open_client, pipeline

from stabilize.streaming.gateway import TOKEN_ENV, Gateway, GatewayConfigError
from stabilize.streaming.gateway._auth import (
    check_bind,
    is_loopback,
    load_token,
    origin_allowed,
    presented_token,
)

if TYPE_CHECKING:
    from conftest import StreamEngine

pytest_plugins = ["gateway_fixtures"]

TOKEN = "s3cret-token"


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- settings (no sockets) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_non_loopback_without_a_token_is_refused(db: StreamEngine) -> None:
    with pytest.raises(GatewayConfigError, match=r"refusing to serve 0\.0\.0\.0 without a token"):
        Gateway(db.events, "0.0.0.0", 0)
    with pytest.raises(GatewayConfigError, match=TOKEN_ENV):
        check_bind("", None)
    check_bind("0.0.0.0", TOKEN)  # with a token it may
    check_bind("127.0.0.1", None)


def test_token_sources(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    assert load_token(str(path), {TOKEN_ENV: "from-env"}) == TOKEN  # the file wins
    assert load_token(None, {TOKEN_ENV: "from-env"}) == "from-env"
    assert load_token(None, {}) is None
    path.write_text("\n")
    with pytest.raises(GatewayConfigError, match="is empty"):
        load_token(str(path), {})
    with pytest.raises(GatewayConfigError, match="cannot read the token file"):
        load_token(str(tmp_path / "missing"), {})
    with pytest.raises(GatewayConfigError, match="set but blank"):
        load_token(None, {TOKEN_ENV: " "})


def test_presented_token_and_origins() -> None:
    assert presented_token({"Authorization": "Bearer abc"}, "/ws") == "abc"
    assert presented_token({"Authorization": "bearer  abc "}, "/ws") == "abc"
    assert presented_token({}, "/ws?token=q%20t") == "q t"
    assert presented_token({"Authorization": "Basic xyz"}, "/ws") is None
    assert origin_allowed(None, "h:1", ())
    assert origin_allowed("http://h:1", "h:1", ())
    assert not origin_allowed("http://evil.example", "h:1", ())
    assert origin_allowed("http://app.example", "h:1", ["http://app.example"])
    assert origin_allowed("http://evil.example", "h:1", ["*"])


# -- over sockets --------------------------------------------------------------------------

# Authentication does not depend on the backend: SQLite only.
sqlite_only = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


async def refused(url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as caught:
        async with open_client(url, **kwargs):
            pass
    response = caught.value.response
    return response.status_code, json.loads(response.body or b"{}")


@sqlite_only
async def test_tokens_on_the_handshake(db: StreamEngine, start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(db.events, token=TOKEN)
    wf = pipeline("step")
    db.orchestrator().start(wf)
    status, body = await refused(gateway.url)
    assert status == 401
    assert body["code"] == "unauthorized"
    assert "Authorization: Bearer <token>" in body["message"]
    assert (await refused(gateway.url + "?token=wrong"))[0] == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert (await refused(gateway.url, additional_headers=wrong))[0] == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    for url, headers in ((gateway.url, good), (f"{gateway.url}?token={TOKEN}", {})):
        async with open_client(url, additional_headers=headers) as client:
            ack = await client.subscribe(workflow_id=wf.id)
            assert ack["workflow_id"] == wf.id
            assert (await client.recv())["event_type"] == "workflow.created"


@sqlite_only
async def test_page_needs_the_token_and_health_does_not(
    db: StreamEngine, start_gateway: GatewayFactory
) -> None:
    gateway = await start_gateway(db.events, token=TOKEN)
    base = gateway.http_url
    status, _, body = await asyncio.to_thread(http_get, f"{base}/workflows/abc")
    assert status == 401
    assert json.loads(body)["code"] == "unauthorized"
    status, headers, body = await asyncio.to_thread(http_get, f"{base}/workflows/abc?token={TOKEN}")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert b"<title>stabilize" in body
    status, _, body = await asyncio.to_thread(http_get, f"{base}/healthz")
    health = json.loads(body)
    assert status == 200
    assert health["status"] == "ok"
    assert health["database"] == "ok"
    assert health["clients"] == 0
    assert health["uptime_seconds"] >= 0
    status, _, body = await asyncio.to_thread(http_get, f"{base}/nothing-here?token={TOKEN}")
    assert status == 404
    assert json.loads(body)["code"] == "not_found"


@sqlite_only
async def test_health_counts_clients(db: StreamEngine, gateway: Gateway) -> None:
    wf = pipeline("step")
    db.orchestrator().start(wf)
    async with open_client(gateway.url) as client:
        await client.subscribe(workflow_id=wf.id)
        _, _, body = await asyncio.to_thread(http_get, f"{gateway.http_url}/healthz")
    health = json.loads(body)
    assert (health["clients"], health["subscriptions"]) == (1, 1)


@sqlite_only
async def test_origins_and_paths(db: StreamEngine, start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(db.events, allowed_origins=["http://app.example"])
    status, body = await refused(gateway.url, origin="http://evil.example")
    assert status == 403
    assert body["code"] == "forbidden_origin"
    for origin in ("http://app.example", gateway.http_url):
        async with open_client(gateway.url, origin=origin) as client:
            await client.send(type="ping")
            assert (await client.expect("pong"))["type"] == "pong"
    status, body = await refused(gateway.url.replace("/ws", "/other"))
    assert (status, body["code"]) == (404, "not_found")
