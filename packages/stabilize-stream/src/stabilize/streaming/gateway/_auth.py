"""Who may connect: the bearer token, the loopback rule, host names and browser origins."""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from collections.abc import Collection, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

TOKEN_ENV = "STABILIZE_GATEWAY_TOKEN"
"""The environment variable ``stabilize serve`` reads the token from."""


class GatewayConfigError(ValueError):
    """The gateway cannot start with these settings (the message says why and what to do)."""


def load_token(
    token_file: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The token clients must present, from ``token_file`` or ``STABILIZE_GATEWAY_TOKEN``.

    Args:
        token_file: A file holding the token (surrounding whitespace is ignored). Wins
            over the environment.
        environ: Where to read the variable (default: ``os.environ``).

    Returns:
        The token, or None when neither source gives one.

    Raises:
        GatewayConfigError: The file cannot be read or holds no token, or the variable is
            set but blank.
    """
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GatewayConfigError(f"cannot read the token file {token_file}: {exc}") from exc
        if not token:
            raise GatewayConfigError(f"the token file {token_file} is empty")
        return token
    value = (os.environ if environ is None else environ).get(TOKEN_ENV)
    if value is None:
        return None
    if not value.strip():
        raise GatewayConfigError(f"{TOKEN_ENV} is set but blank")
    return value.strip()


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address.

    ``""``, ``0.0.0.0`` and ``::`` (every interface) are not; a name is resolved.
    """
    if host in {"", "0.0.0.0", "::"}:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses
    )


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without a token.

    Raises:
        GatewayConfigError: ``host`` is reachable from other machines and no token is set.
    """
    if token is None and not is_loopback(host):
        shown = host or "all interfaces"
        raise GatewayConfigError(
            f"refusing to serve {shown} without a token: anyone who can reach it could read "
            f"every workflow's events. Set {TOKEN_ENV} or pass --token-file (clients then "
            "send 'Authorization: Bearer <token>' or '?token=<token>'), or bind 127.0.0.1"
        )


def presented_token(headers: Mapping[str, str], path: str) -> str | None:
    """The token of a request: ``Authorization: Bearer <token>``, else ``?token=``."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def token_matches(expected: str | None, presented: str | None) -> bool:
    """True when no token is required, or ``presented`` is it (constant-time compare)."""
    if expected is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def split_host(value: str) -> tuple[str, str | None]:
    """``(name, port)`` of a ``Host`` header or an origin's netloc (name lower-cased).

    ``[::1]:8765`` gives ``("::1", "8765")``; ``localhost`` gives ``("localhost", None)``.
    """
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return name, port or None
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        return name, port or None
    return value, None


def is_loopback_name(name: str) -> bool:
    """True for ``localhost`` and loopback address literals (127.0.0.0/8, ::1).

    Never resolves a name: resolving is what a DNS-rebinding attacker controls.
    """
    name = name.rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _listed(value: str, allowed: Collection[str]) -> bool:
    """Whether ``host[:port]`` is in ``allowed`` (an entry without a port allows any port)."""
    name, port = split_host(value)
    for entry in allowed:
        entry_name, entry_port = split_host(entry)
        if entry_name == name and entry_port in (None, port):
            return True
    return False


def host_allowed(host: str | None, allowed_hosts: Collection[str]) -> bool:
    """Whether a request addressed to ``host`` (its ``Host`` header) may be answered.

    Loopback names (``localhost``, 127.0.0.0/8, ``[::1]``, with or without a port) and the
    names in ``allowed_hosts`` pass. A page of another site whose name an attacker points
    at 127.0.0.1 (DNS rebinding) sends its own name, and is refused.
    """
    if host is None or not host.strip():
        return False
    return is_loopback_name(split_host(host)[0]) or _listed(host, allowed_hosts)


def origin_trusted(origin: str, host: str | None, allowed_origins: Collection[str]) -> bool:
    """Whether a request from a page of ``origin`` may be answered without a token.

    The origin must be a loopback one (``http://localhost:3000``), one in
    ``allowed_origins`` (``"*"``: any), or the gateway's own pages (its host equals the
    ``Host`` header, which the caller has checked).
    """
    if "*" in allowed_origins or origin in allowed_origins:
        return True
    netloc = urlsplit(origin).netloc
    if not netloc:  # "null" (sandboxed pages, files) and other opaque origins
        return False
    return is_loopback_name(split_host(netloc)[0]) or (
        host is not None and netloc.lower() == host.strip().lower()
    )


def origin_allowed(origin: str | None, host: str | None, allowed: Collection[str]) -> bool:
    """Whether a browser page from ``origin`` may open a WebSocket.

    Requests without an ``Origin`` header (programs, not browsers) pass; so do pages
    served by the gateway itself (the origin's host equals the ``Host`` header) and the
    origins in ``allowed`` (``"*"`` allows any). This stops another site the user visits
    from reading the events of a gateway on the user's machine.
    """
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()
