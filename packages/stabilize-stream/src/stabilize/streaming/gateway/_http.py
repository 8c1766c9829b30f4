"""The gateway's HTTP side: routing of the opening handshake, health, the timeline page."""

from __future__ import annotations

import base64
import functools
import hashlib
import http
import json
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from stabilize.streaming.gateway._auth import (
    host_allowed,
    origin_allowed,
    origin_trusted,
    presented_token,
    split_host,
    token_matches,
)
from stabilize.streaming.gateway._protocol import ErrorCode

WS_PATH = "/ws"
"""Where the WebSocket endpoint lives."""

HEALTH_PATH = "/healthz"
PAGE_PATHS = re.compile(r"^/(?:workflows/[^/]+)?$")
"""``/`` (with ``?workflow=<id>``) and ``/workflows/<id>`` serve the timeline page."""

EVENT_PATH = re.compile(r"^/workflows/([^/]+)/events/([0-9]{1,18})$")
"""``/workflows/<id>/events/<sequence>``: one event in full (JSON), for truncated frames."""


@functools.cache
def timeline_page() -> tuple[bytes, str]:
    """The page's bytes and its Content-Security-Policy (hashes of its inline code)."""
    text = (
        resources.files("stabilize.streaming.gateway")
        .joinpath("timeline.html")
        .read_text(encoding="utf-8")
    )
    hashes = {}
    for tag in ("script", "style"):
        match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
        assert match is not None, f"timeline.html has no <{tag}>"
        digest = hashlib.sha256(match.group(1).encode()).digest()
        hashes[tag] = "'sha256-" + base64.b64encode(digest).decode() + "'"
    policy = (
        f"default-src 'none'; script-src {hashes['script']}; style-src {hashes['style']}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    return text.encode(), policy


def _response(
    status: http.HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None = None
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    for name, value in (extra or {}).items():
        headers[name] = value
    return Response(status.value, status.phrase, headers, body)


def json_response(status: http.HTTPStatus, payload: dict[str, Any]) -> Response:
    """A JSON HTTP response."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _response(status, body, "application/json")


def json_body_response(status: http.HTTPStatus, body: bytes) -> Response:
    """A response of already encoded JSON."""
    return _response(status, body, "application/json")


def error_response(status: http.HTTPStatus, code: str, message: str) -> Response:
    """An HTTP error with the JSON body ``{"type": "error", "code": ..., "message": ...}``."""
    return json_response(status, {"type": "error", "code": code, "message": message})


SINGLE_HEADERS = ("Host", "Origin", "Authorization")
"""Headers a request may carry once: two values leave who is asking ambiguous."""


@dataclass(frozen=True)
class Router:
    """Answers each opening request: WebSocket upgrade, health, page, event, or an error.

    Args:
        token: The token clients must present (None: none needed).
        allowed_origins: Browser origins allowed besides the gateway's own (and, without a
            token, besides loopback ones).
        health: Produces the health response.
        allowed_hosts: Without a token: ``Host`` names answered besides loopback ones.
        admit: Called for a WebSocket upgrade that passed every check: None admits it,
            a reason refuses it with 503 (the connection limit).
        event: Produces the response of ``GET /workflows/<id>/events/<sequence>``.
    """

    token: str | None
    allowed_origins: Collection[str]
    health: Callable[[], Awaitable[Response]]
    allowed_hosts: Collection[str] = ()
    admit: Callable[[ServerConnection], str | None] | None = None
    event: Callable[[str, int], Awaitable[Response]] | None = None

    async def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        """``process_request`` of the server: None lets a WebSocket handshake proceed."""
        for name in SINGLE_HEADERS:
            count = len(request.headers.get_all(name))
            if count > 1:
                return error_response(
                    http.HTTPStatus.BAD_REQUEST,
                    "bad_request",
                    f"the request has {count} {name} headers: send exactly one",
                )
        path = urlsplit(request.path).path
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if path == HEALTH_PATH and not upgrade:
            # Open to load balancers and probes, token or not: it reveals no workflow data.
            return await self.health()
        if upgrade and path != WS_PATH:
            return error_response(
                http.HTTPStatus.NOT_FOUND, "not_found", f"the WebSocket endpoint is {WS_PATH}"
            )
        event = None if upgrade else EVENT_PATH.match(path)
        if not upgrade and event is None and not PAGE_PATHS.match(path):
            return error_response(http.HTTPStatus.NOT_FOUND, "not_found", f"no page at {path}")
        if not token_matches(self.token, presented_token(request.headers, request.path)):
            return error_response(
                http.HTTPStatus.UNAUTHORIZED,
                ErrorCode.UNAUTHORIZED.value,
                "missing or wrong token: send 'Authorization: Bearer <token>' or '?token=<token>'",
            )
        refused = self._refuse_site(request.headers.get("Host"), request.headers.get("Origin"))
        if refused is not None:
            return refused
        if upgrade:
            reason = None if self.admit is None else self.admit(connection)
            if reason is not None:
                return error_response(
                    http.HTTPStatus.SERVICE_UNAVAILABLE, "too_many_connections", reason
                )
            return None
        if event is not None:
            if self.event is None:
                return error_response(http.HTTPStatus.NOT_FOUND, "not_found", f"no page at {path}")
            return await self.event(unquote(event.group(1)), int(event.group(2)))
        body, policy = timeline_page()
        return _response(
            http.HTTPStatus.OK,
            body,
            "text/html; charset=utf-8",
            {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer"},
        )

    def _refuse_site(self, host: str | None, origin: str | None) -> Response | None:
        """The 403 for a request whose ``Host`` or ``Origin`` may not be answered, if any."""
        if self.token is None and not host_allowed(host, self.allowed_hosts):
            # Without a token, the Host header is all that tells a page of this machine
            # from another site whose name was re-pointed at 127.0.0.1 (DNS rebinding).
            shown = "no Host header" if not host else f"Host {host!r}"
            name = split_host(host)[0] if host else "NAME"
            return error_response(
                http.HTTPStatus.FORBIDDEN,
                "forbidden_host",
                f"{shown} is not a loopback name: without a token the gateway answers only "
                "requests addressed to localhost, 127.0.0.1 or [::1] (a DNS-rebinding "
                f"defence); start it with --allowed-host {name} to answer this name, or set "
                "a token",
            )
        if origin is None:
            return None
        if self.token is None:
            trusted = origin_trusted(origin, host, self.allowed_origins)
        else:
            trusted = origin_allowed(origin, host, self.allowed_origins)
        if trusted:
            return None
        return error_response(
            http.HTTPStatus.FORBIDDEN,
            "forbidden_origin",
            f"pages from {origin} may not connect; start the gateway with "
            f"--allowed-origin {origin} to allow them",
        )
