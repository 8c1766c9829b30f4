"""The WebSocket gateway: the event log, live, for any UI or service (``stabilize serve``).

``Gateway(event_store, host, port, token=...)`` serves a small JSON protocol on ``/ws``
(subscribe to a workflow, an application or everything; resume exactly where a previous
connection stopped), ``GET /healthz`` and a live timeline page (``GET /workflows/<id>``).
``docs/gateway.md`` is the protocol reference.

Names are loaded on first use, so that importing this package (for example to run
``stabilize serve --help``) does not import ``websockets``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stabilize.streaming.gateway._auth import TOKEN_ENV as TOKEN_ENV
    from stabilize.streaming.gateway._auth import GatewayConfigError as GatewayConfigError
    from stabilize.streaming.gateway._protocol import PROTOCOL_VERSION as PROTOCOL_VERSION
    from stabilize.streaming.gateway._protocol import ErrorCode as ErrorCode
    from stabilize.streaming.gateway._server import Gateway as Gateway

__all__ = ["PROTOCOL_VERSION", "TOKEN_ENV", "ErrorCode", "Gateway", "GatewayConfigError"]

_HOMES = {
    "Gateway": "stabilize.streaming.gateway._server",
    "GatewayConfigError": "stabilize.streaming.gateway._auth",
    "TOKEN_ENV": "stabilize.streaming.gateway._auth",
    "ErrorCode": "stabilize.streaming.gateway._protocol",
    "PROTOCOL_VERSION": "stabilize.streaming.gateway._protocol",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
