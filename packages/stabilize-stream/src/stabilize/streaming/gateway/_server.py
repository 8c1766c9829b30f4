"""The Gateway: a WebSocket server streaming the event log to subscribed clients."""

from __future__ import annotations

import asyncio
import http
import logging
import socket
import threading
import time
from collections.abc import Collection
from types import TracebackType

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.protocol import State

from stabilize.events import EventStore
from stabilize.streaming.gateway._auth import GatewayConfigError, check_bind
from stabilize.streaming.gateway._client import ClientSession, Subscription
from stabilize.streaming.gateway._feed import LogFeed, now_ms
from stabilize.streaming.gateway._http import (
    Router,
    error_response,
    json_body_response,
    json_response,
)
from stabilize.streaming.gateway._protocol import (
    MAX_EVENT_BYTES,
    MAX_NAME_LENGTH,
    MIN_EVENT_BYTES,
    PROTOCOL_VERSION,
    ErrorCode,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    error_frame,
    event_json,
    parse_frame,
    pong_frame,
    subscribed_frame,
)
from stabilize.streaming.gateway._wake import Wakers

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 5.0
"""Seconds the health check waits for the database."""

HARD_SIZE_FACTOR = 4
"""Frames above ``max_message_bytes`` get ``too_large``; above this many times it, the
connection is closed (1009) without reading the rest."""


class Gateway:
    """Serves the event log over WebSocket: ``subscribe``, resume, heartbeats, health.

    One port carries the WebSocket endpoint (``/ws``), ``GET /healthz`` and the timeline
    page (``GET /workflows/<id>``). Run it in an event loop (``await gateway.start()``,
    ``await gateway.close()``, or ``async with``), in a thread (:meth:`run_in_thread`), or
    from the command line (``stabilize serve``).

    Args:
        event_store: The event log to serve (``SqliteEventStore``, ``PostgresEventStore``,
            or anything with ``get_events`` and ``recent_heads``).
        host: The address to bind. Anything but a loopback address needs ``token``.
        port: The port (0: any free port; :meth:`start` returns the one bound).
        token: The bearer token clients must present (None: none).
        max_queue: Most event frames waiting to be sent to one client (events that do
            not fit wait in the log).
        stall_timeout: Seconds a client with a full queue may take no frame before
            subscriptions with events waiting get ``resync`` and are stopped.
        heartbeat: Seconds between ``heartbeat`` frames.
        max_message_bytes: Longest client frame accepted (``too_large`` above it).
        max_subscriptions: Most subscriptions of one connection.
        max_connections: Most WebSocket connections at once (each may hold ``max_queue``
            event frames); handshakes past it are refused with HTTP 503.
        max_event_bytes: Longest event frame sent. The biggest values of a longer event's
            ``data`` are left out (``null``), and the frame says which and where to fetch
            the whole event; the default keeps frames under the 1 MiB that WebSocket
            clients accept by default.
        allowed_origins: Browser origins, besides the gateway's own pages (and, without a
            token, loopback ones), allowed to connect (``"*"``: any).
        allowed_hosts: Without a token, ``Host`` names answered besides loopback ones
            (``"gateway.example.com"``, or with a port: ``"gateway.example.com:8443"``).
        poll_interval: Seconds between scans of the log when nothing wakes the gateway
            (default 0.5: commits wake it, on SQLite and PostgreSQL alike).
        batch_size: Most events read per query.
        clock_slack: Seconds application/all subscriptions look back for commits that
            were slow or stamped by another machine's clock.
        send_buffer: Bytes of kernel send buffer per connection (None: the system's
            default, which grows up to ``net.ipv4.tcp_wmem``'s maximum). A smaller buffer
            bounds what a stalled client holds and makes its queue fill sooner.

    Raises:
        GatewayConfigError: ``host`` is not a loopback address and there is no token, or
            a limit is not positive.
    """

    def __init__(
        self,
        event_store: EventStore,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        token: str | None = None,
        max_queue: int = 1000,
        stall_timeout: float = 2.0,
        heartbeat: float = 15.0,
        max_message_bytes: int = 256 * 1024,
        max_subscriptions: int = 100,
        max_connections: int = 256,
        max_event_bytes: int = MAX_EVENT_BYTES,
        allowed_origins: Collection[str] = (),
        allowed_hosts: Collection[str] = (),
        poll_interval: float | None = None,
        batch_size: int = 500,
        clock_slack: float = 30.0,
        send_buffer: int | None = None,
    ) -> None:
        check_bind(host, token)
        for name, value in (
            ("max_queue", max_queue),
            ("stall_timeout", stall_timeout),
            ("heartbeat", heartbeat),
            ("max_message_bytes", max_message_bytes),
            ("max_subscriptions", max_subscriptions),
            ("max_connections", max_connections),
            ("batch_size", batch_size),
        ):
            if value <= 0:
                raise GatewayConfigError(f"{name} must be positive, not {value}")
        if max_event_bytes < MIN_EVENT_BYTES:
            raise GatewayConfigError(
                f"max_event_bytes must be at least {MIN_EVENT_BYTES}, not {max_event_bytes}"
            )
        self.event_store = event_store
        self.host = host
        self.port = port
        self.token = token
        self.max_queue = max_queue
        self.stall_timeout = stall_timeout
        self.heartbeat = heartbeat
        self.max_message_bytes = max_message_bytes
        self.max_subscriptions = max_subscriptions
        self.max_connections = max_connections
        self.max_event_bytes = max_event_bytes
        self.allowed_origins = tuple(allowed_origins)
        self.allowed_hosts = tuple(allowed_hosts)
        self.clock_slack_ms = int(clock_slack * 1000)
        self.send_buffer = send_buffer
        self._poll_interval = poll_interval
        self._batch_size = min(batch_size, max_queue)
        self._clients: set[ClientSession] = set()
        self._admitted: set[ServerConnection] = set()
        self._server: Server | None = None
        self._feed: LogFeed | None = None
        self._wakers: Wakers | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._started = 0.0
        self._closed = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        if self._server is not None:
            raise RuntimeError("the gateway is already started")
        loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        wakers = Wakers(self.event_store, lambda: self.feed.wake(), loop)
        poll = self._poll_interval
        if poll is None:  # commits wake the feed: polling is only a safety net
            poll = 0.5 if wakers.listening else 0.05
        self._feed = LogFeed(
            self.event_store,
            poll_interval=poll,
            batch_size=self._batch_size,
            clock_slack_ms=self.clock_slack_ms,
            max_event_bytes=self.max_event_bytes,
        )
        self._feed.start()
        self._wakers = wakers
        wakers.start()
        router = Router(
            self.token,
            self.allowed_origins,
            self._health,
            allowed_hosts=self.allowed_hosts,
            admit=self._admit,
            event=self._event,
        )
        try:
            self._server = await serve(
                self._handle,
                self.host,
                self.port,
                process_request=router,
                max_size=self.max_message_bytes * HARD_SIZE_FACTOR,
                # Each frame would be compressed once per client: CPU the fan-out needs.
                compression=None,
            )
        except BaseException:
            await self._stop_background()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        self._heartbeat_task = loop.create_task(self._heartbeats(), name="gateway-heartbeat")
        log.info("gateway serving on %s", self.url)
        return self.port

    async def close(self) -> None:
        """Close every connection (1001) and stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        await self._stop_background()
        self._closed.set()

    async def _stop_background(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
            self._heartbeat_task = None
        if self._wakers is not None:
            await asyncio.to_thread(self._wakers.close)
            self._wakers = None
        if self._feed is not None:
            await self._feed.close()

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until :meth:`close` is called."""
        if self._server is None:
            await self.start()
        await self._closed.wait()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def run_in_thread(self, timeout: float = 30.0) -> int:
        """Serve from a background thread with its own event loop; returns the port.

        Stop it with :meth:`stop_thread`.
        """
        if self._thread is not None:
            raise RuntimeError("the gateway already runs in a thread")
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._thread_loop = asyncio.get_running_loop()
            try:
                await self.start()
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            await self._closed.wait()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="stabilize-gateway", daemon=True
        )
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"the gateway did not start within {timeout} s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self.port

    def stop_thread(self, timeout: float = 30.0) -> None:
        """Stop a gateway started with :meth:`run_in_thread` (waits for the thread)."""
        thread, loop = self._thread, self._thread_loop
        if thread is None or loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self.close(), loop)
        future.result(timeout)
        thread.join(timeout)
        self._thread = None
        self._thread_loop = None

    # -- state ---------------------------------------------------------------------------

    @property
    def feed(self) -> LogFeed:
        """The log reader (exists once started)."""
        if self._feed is None:
            raise RuntimeError("the gateway is not started")
        return self._feed

    @property
    def url(self) -> str:
        """The WebSocket URL (``ws://host:port/ws``)."""
        return f"ws://{self._netloc()}/ws"

    @property
    def http_url(self) -> str:
        """The base HTTP URL (``http://host:port``)."""
        return f"http://{self._netloc()}"

    def _netloc(self) -> str:
        host = self.host or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def client_count(self) -> int:
        """Connected WebSocket clients."""
        return len(self._clients)

    async def _health(self) -> Response:
        error = None
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                await asyncio.to_thread(self.event_store.get_events, "", 0, 1)
        except TimeoutError:
            error = f"no answer within {HEALTH_TIMEOUT:g} s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        payload = {
            "status": "ok" if error is None else "unavailable",
            "database": "ok" if error is None else f"error: {error}",
            "clients": self.client_count,
            "subscriptions": self._feed.subscriptions if self._feed is not None else 0,
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            "protocol": PROTOCOL_VERSION,
        }
        status = http.HTTPStatus.OK if error is None else http.HTTPStatus.SERVICE_UNAVAILABLE
        return json_response(status, payload)

    async def _event(self, workflow_id: str, sequence: int) -> Response:
        """``GET /workflows/<id>/events/<sequence>``: the whole event, as the log has it."""
        if "\x00" in workflow_id or len(workflow_id) > MAX_NAME_LENGTH:
            return error_response(
                http.HTTPStatus.NOT_FOUND, "not_found", "no workflow has such an id"
            )
        try:
            found = await asyncio.to_thread(
                self.event_store.get_events, workflow_id, max(0, sequence - 1), 1
            )
        except Exception as exc:
            log.warning("cannot read the event log", exc_info=True)
            return error_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                ErrorCode.UNAVAILABLE.value,
                f"the event log cannot be read ({type(exc).__name__}); try again later",
            )
        if not found or found[0].sequence != sequence:
            return error_response(
                http.HTTPStatus.NOT_FOUND,
                "not_found",
                f"workflow {workflow_id!r} has no event {sequence} in the log",
            )
        return json_body_response(http.HTTPStatus.OK, event_json(found[0]))

    def _admit(self, connection: ServerConnection) -> str | None:
        """Reserve a connection slot for a handshake, or say why there is none."""
        if len(self._admitted) >= self.max_connections:
            # Forget handshakes that failed after they were admitted (never handled).
            self._admitted = {c for c in self._admitted if c.state is not State.CLOSED}
        if len(self._admitted) >= self.max_connections:
            return (
                f"the gateway already serves {self.max_connections} connections, the most "
                "allowed (--max-connections): try again later"
            )
        self._admitted.add(connection)
        return None

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            for client in list(self._clients):
                client.send_heartbeat()

    # -- connections ---------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        if self.send_buffer is not None:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        client = ClientSession(
            ws,
            self.feed,
            max_queue=self.max_queue,
            max_subscriptions=self.max_subscriptions,
            stall_timeout=self.stall_timeout,
        )
        self._clients.add(client)
        writer = asyncio.get_running_loop().create_task(client.write(), name="gateway-writer")
        try:
            async for message in ws:
                if client.closed:
                    continue  # being closed: read (and ignore) until the handshake ends
                if isinstance(message, bytes):
                    client.send_control(
                        error_frame(
                            ProtocolError(
                                ErrorCode.BAD_FRAME,
                                "binary frames are not supported: send JSON text frames",
                            )
                        )
                    )
                else:
                    await self._on_text(client, message)
                # Stop reading while the answers wait to be sent: a burst of frames
                # must not starve the writer (the client is closed if it never reads).
                await client.read_room()
        except ConnectionClosed:
            pass  # closed abnormally (1006, 1011...): the same end as a clean close
        finally:
            client.close()
            self._clients.discard(client)
            self._admitted.discard(ws)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _on_text(self, client: ClientSession, text: str) -> None:
        try:
            size = len(text.encode())
            if size > self.max_message_bytes:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"frame of {size} bytes exceeds the limit of {self.max_message_bytes} bytes",
                )
            frame = parse_frame(text)
            if isinstance(frame, Subscribe):
                await self._subscribe(client, frame)
            elif isinstance(frame, Unsubscribe):
                if not client.unsubscribe(frame.id):
                    raise ProtocolError(
                        ErrorCode.UNKNOWN_SUBSCRIPTION,
                        f"no active subscription with id {frame.id!r}",
                        field="id",
                        sub_id=frame.id,
                    )
            elif isinstance(frame, Ping):
                client.send_control(pong_frame(frame.data, now_ms()))
        except ProtocolError as error:
            client.send_control(error_frame(error))

    async def _subscribe(self, client: ClientSession, frame: Subscribe) -> None:
        if frame.id in client.subscriptions:
            raise ProtocolError(
                ErrorCode.SUBSCRIPTION_EXISTS,
                f"subscription id {frame.id!r} is in use on this connection "
                "(unsubscribe first, or choose another id)",
                field="id",
                sub_id=frame.id,
            )
        if len(client.subscriptions) >= self.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"this connection already has {self.max_subscriptions} subscriptions, "
                "the most allowed",
                sub_id=frame.id,
            )
        discover_from = 0
        since_time = None
        if frame.workflow_id is not None:
            await self._check_workflow(frame)
        else:
            if frame.application is not None:
                await self._check_application(frame)
            requested = frame.since_time if frame.since_time is not None else now_ms()
            since_time = discover_from = max(0, requested - self.clock_slack_ms)
        if client.closed:
            return
        client.send_control(subscribed_frame(frame, since_time))
        client.add(Subscription(client, frame, discover_from))

    async def _check_application(self, frame: Subscribe) -> None:
        """Refuse application subscriptions on a log that cannot filter by application.

        (A SQLite log in a file of its own has no ``workflows`` table to join.)
        """
        future = now_ms() + 86_400_000  # an empty range of the time index: cheap
        try:
            await asyncio.to_thread(self.event_store.recent_heads, future, frame.application)
        except Exception as exc:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                f"application subscriptions are not available on this event log: {exc}",
                field="application",
                sub_id=frame.id,
            ) from exc

    async def _check_workflow(self, frame: Subscribe) -> None:
        """Refuse a workflow that is not in the log, or a ``since`` past its end."""
        assert frame.workflow_id is not None
        store = self.event_store
        try:
            found = await asyncio.to_thread(
                store.get_events, frame.workflow_id, max(0, frame.since - 1), 1
            )
            exists = bool(found) or (
                frame.since > 0
                and bool(await asyncio.to_thread(store.get_events, frame.workflow_id, 0, 1))
            )
        except Exception as exc:
            log.warning("cannot read the event log", exc_info=True)
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                f"the event log cannot be read ({type(exc).__name__}); try again later",
                sub_id=frame.id,
            ) from exc
        if not exists:
            raise ProtocolError(
                ErrorCode.UNKNOWN_WORKFLOW,
                f"workflow {frame.workflow_id!r} has no events in the log "
                "(wrong id, or another database?)",
                field="workflow_id",
                sub_id=frame.id,
            )
        if frame.since > 0 and (not found or found[0].sequence != frame.since):
            raise ProtocolError(
                ErrorCode.BAD_FRAME,
                f"'since' {frame.since} is past the last event of workflow "
                f"{frame.workflow_id!r}: resume from a sequence you received",
                field="since",
                sub_id=frame.id,
            )
