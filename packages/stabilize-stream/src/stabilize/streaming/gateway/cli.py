"""``stabilize serve``: run the WebSocket gateway over a database's event log."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stabilize.cli import (
    CommandError,
    add_database_options,
    command_parser,
    run_command,
)
from stabilize.streaming.gateway._protocol import MAX_EVENT_BYTES  # no websockets

if TYPE_CHECKING:
    from stabilize.streaming.gateway._server import Gateway

PROG = "stabilize serve"

SUMMARY = "Serve a database's workflow events over WebSocket, with a live timeline page."


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "serve",
        SUMMARY,
        details=(
            "Clients subscribe at /ws; /healthz answers health checks and /workflows/<id> "
            "shows a workflow's live timeline in a browser. Stop it with Ctrl-C or SIGTERM."
        ),
        examples=(
            "stabilize serve --db-url sqlite:///stabilize.db",
            "stabilize serve --db-url postgresql://app@db:5432/app --host 0.0.0.0 "
            "--token-file /run/secrets/gateway-token",
        ),
    )
    add_database_options(parser, schema_help="PostgreSQL schema of the event log")
    parser.add_argument("--host", metavar="ADDRESS", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--port", metavar="PORT", type=int, default=8765, help="port to bind, 0 for any free one"
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        default=None,
        help="file holding the bearer token clients must send "
        "(default: $STABILIZE_GATEWAY_TOKEN; required to bind a non-loopback address)",
    )
    parser.add_argument(
        "--max-queue",
        metavar="N",
        type=int,
        default=1000,
        help="most events waiting to be sent to one client",
    )
    parser.add_argument(
        "--stall-timeout",
        metavar="SECONDS",
        type=float,
        default=2.0,
        help="seconds a client with a full queue may read nothing before its subscriptions "
        "must resync",
    )
    parser.add_argument(
        "--heartbeat",
        metavar="SECONDS",
        type=float,
        default=15.0,
        help="seconds between heartbeats",
    )
    parser.add_argument(
        "--max-message-bytes",
        metavar="N",
        type=int,
        default=256 * 1024,
        help="longest client frame accepted",
    )
    parser.add_argument(
        "--allowed-origin",
        "--allow-origin",
        dest="allowed_origins",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed to connect besides the gateway's own pages and, "
        "without a token, loopback ones (repeatable; '*' allows any)",
    )
    parser.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="without a token: a Host name (optionally NAME:PORT) answered besides localhost, "
        "127.0.0.1 and [::1], e.g. the name a reverse proxy forwards (repeatable)",
    )
    parser.add_argument(
        "--max-connections",
        metavar="N",
        type=int,
        default=256,
        help="most WebSocket connections at once; more are refused with 503",
    )
    parser.add_argument(
        "--max-event-bytes",
        metavar="N",
        type=int,
        default=MAX_EVENT_BYTES,
        help="longest event frame sent; bigger values of an event's data are left out "
        "and served at /workflows/<id>/events/<sequence>",
    )
    parser.add_argument(
        "--poll-interval",
        metavar="SECONDS",
        type=float,
        default=None,
        help="seconds between scans of the log when no commit woke the gateway (default: 0.5)",
    )
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG, INFO, WARNING or ERROR",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``stabilize serve`` until SIGINT or SIGTERM.

    Returns:
        0 after a clean stop, 1 when the database cannot be opened or the port bound, 2
        for bad settings (including a non-loopback address without a token).
    """
    return run_command("serve", _parser(), argv, _run)


def _run(ns: argparse.Namespace) -> int:
    logging.basicConfig(
        level=ns.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from stabilize.streaming.gateway._auth import GatewayConfigError, check_bind, load_token

    try:
        token = load_token(ns.token_file)
        check_bind(ns.host, token)
    except GatewayConfigError as exc:
        raise CommandError(str(exc), usage=True) from exc

    from stabilize.connect import check_database_url, describe_failure
    from stabilize.events import open_event_store
    from stabilize.streaming.gateway._server import Gateway

    check_database_url(ns.db_url)
    try:
        store = open_event_store(ns.db_url, ns.schema, create=False)
    except Exception as exc:  # a missing file or driver, an unreachable server...
        raise CommandError(f"cannot open {ns.db_url}: {describe_failure(exc, ns.db_url)}") from exc
    try:
        gateway = Gateway(
            store,
            ns.host,
            ns.port,
            token=token,
            max_queue=ns.max_queue,
            stall_timeout=ns.stall_timeout,
            heartbeat=ns.heartbeat,
            max_message_bytes=ns.max_message_bytes,
            max_connections=ns.max_connections,
            max_event_bytes=ns.max_event_bytes,
            allowed_origins=ns.allowed_origins,
            allowed_hosts=ns.allowed_hosts,
            poll_interval=ns.poll_interval,
        )
    except GatewayConfigError as exc:
        store.close()
        raise CommandError(str(exc), usage=True) from exc
    try:
        return asyncio.run(_serve(gateway))
    finally:
        store.close()


async def _serve(gateway: Gateway) -> int:
    try:
        await gateway.start()
    except OSError as exc:
        raise CommandError(f"cannot listen on {gateway.host}:{gateway.port}: {exc}") from exc
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []  # a reference keeps the task alive
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: stopping.append(loop.create_task(gateway.close())))
    # Tests and scripts read this line to learn the bound port.
    print(f"{PROG}: listening on {gateway.http_url} (WebSocket {gateway.url})", flush=True)
    await gateway.serve_forever()
    print(f"{PROG}: stopped", flush=True)
    return 0
