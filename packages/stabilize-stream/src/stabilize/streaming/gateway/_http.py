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
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from stabilize.streaming.gateway._auth import origin_allowed, presented_token, token_matches
from stabilize.streaming.gateway._protocol import ErrorCode

WS_PATH = "/ws"
"""Where the WebSocket endpoint lives."""

HEALTH_PATH = "/healthz"
PAGE_PATHS = re.compile(r"^/(?:workflows/[^/]+)?$")
"""``/`` (with ``?workflow=<id>``) and ``/workflows/<id>`` serve the timeline page."""


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


def _error(status: http.HTTPStatus, code: str, message: str) -> Response:
    return json_response(status, {"type": "error", "code": code, "message": message})


@dataclass(frozen=True)
class Router:
    """Answers each opening request: WebSocket upgrade, health, page, or an error.

    Args:
        token: The token clients must present (None: none needed).
        allowed_origins: Browser origins allowed besides the gateway's own.
        health: Produces the health response.
    """

    token: str | None
    allowed_origins: Collection[str]
    health: Callable[[], Awaitable[Response]]

    async def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        """``process_request`` of the server: None lets a WebSocket handshake proceed."""
        path = urlsplit(request.path).path
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if path == HEALTH_PATH and not upgrade:
            # Open to load balancers and probes, token or not: it reveals no workflow data.
            return await self.health()
        if upgrade and path != WS_PATH:
            return _error(
                http.HTTPStatus.NOT_FOUND, "not_found", f"the WebSocket endpoint is {WS_PATH}"
            )
        if not upgrade and not PAGE_PATHS.match(path):
            return _error(http.HTTPStatus.NOT_FOUND, "not_found", f"no page at {path}")
        if not token_matches(self.token, presented_token(request.headers, request.path)):
            return _error(
                http.HTTPStatus.UNAUTHORIZED,
                ErrorCode.UNAUTHORIZED.value,
                "missing or wrong token: send 'Authorization: Bearer <token>' or '?token=<token>'",
            )
        if upgrade:
            if not origin_allowed(
                request.headers.get("Origin"), request.headers.get("Host"), self.allowed_origins
            ):
                return _error(
                    http.HTTPStatus.FORBIDDEN,
                    "forbidden_origin",
                    f"pages from {request.headers.get('Origin')} may not connect; "
                    "start the gateway with --allow-origin to allow them",
                )
            return None
        body, policy = timeline_page()
        return _response(
            http.HTTPStatus.OK,
            body,
            "text/html; charset=utf-8",
            {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer"},
        )
