"""The connect-time half of the SSRF guard: an httpx transport whose sockets are checked.

:class:`GuardedBackend` is an httpcore network backend. Its ``connect_tcp`` resolves the
host itself, checks EVERY address with the :class:`~stabilize.tasks.http._guard.SSRFGuard`,
connects to a checked IP (never to the name, so a DNS answer cannot change between check
and connect) and checks the connected socket's peer address again, all before a single
request byte is written. TLS still uses the original host name (httpcore passes it as
``server_hostname`` for SNI and certificate checks) and the ``Host`` header is the URL's.

Importing this module imports httpx and httpcore: only the task does, when it runs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from stabilize.tasks.http._guard import BlockedURLError, SSRFGuard, parse_address


class AbortedError(Exception):
    """The request was aborted (cancellation or the overall timeout)."""


class GuardedBackend(httpcore.NetworkBackend):
    """Opens TCP connections only to addresses the guard allows; can abort them all."""

    def __init__(self, guard: SSRFGuard) -> None:
        self.guard = guard
        self._inner = httpcore.SyncBackend()
        self._lock = threading.Lock()
        self._streams: list[_TrackedStream] = []
        self._aborted = False

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve, check every address, connect to a checked one, check the peer."""
        addresses = self.guard.addresses(host, port)
        last: Exception | None = None
        for address in addresses:
            self._raise_if_aborted()
            try:
                stream = self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            tracked = _TrackedStream(stream)
            self._track(tracked)
            try:
                self._check_peer(tracked, port, host)
            except BaseException:
                tracked.close()
                raise
            return tracked
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Unix sockets are never used."""
        raise BlockedURLError("HTTPTask: unix sockets are not allowed")

    def _check_peer(self, stream: httpcore.NetworkStream, port: int, host: str) -> None:
        peer = stream.get_extra_info("server_addr")
        if peer is None:
            sock = stream.get_extra_info("socket")
            peer = sock.getpeername() if isinstance(sock, socket.socket) else None
        if peer is None:
            raise BlockedURLError(f"HTTPTask: cannot tell which address {host!r} connected to")
        self.guard.check_address(parse_address(str(peer[0])), port, host)

    def _track(self, stream: _TrackedStream) -> None:
        with self._lock:
            self._streams.append(stream)
            aborted = self._aborted
        if aborted:
            stream.shutdown()
            raise AbortedError("aborted")

    def _raise_if_aborted(self) -> None:
        with self._lock:
            if self._aborted:
                raise AbortedError("aborted")

    def abort(self) -> None:
        """Shut down every socket opened so far (wakes blocked reads); refuse new ones."""
        with self._lock:
            self._aborted = True
            streams = list(self._streams)
        for stream in streams:
            stream.shutdown()


class _TrackedStream(httpcore.NetworkStream):
    """A network stream that follows its TLS upgrade, so an abort reaches the live socket."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self._inner = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return self

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def shutdown(self) -> None:
        """Shut the socket down in both directions (a blocked read returns at once)."""
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport over a :class:`GuardedBackend` (no proxies, no unix sockets)."""

    def __init__(self, backend: GuardedBackend, *, verify: bool = True) -> None:
        # HTTPTransport.__init__ only builds ``self._pool``; build it with our backend
        # instead (HTTPTransport takes no network backend argument).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=10,
            max_keepalive_connections=10,
            keepalive_expiry=5.0,
            network_backend=backend,
        )
