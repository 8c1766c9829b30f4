"""Fixtures of the gateway tests (a pytest plugin: test modules name it in ``pytest_plugins``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from gateway_helpers import GatewayFactory, run_engine

from stabilize.streaming.gateway import Gateway

if TYPE_CHECKING:
    from conftest import StreamEngine


@pytest.fixture
async def start_gateway() -> AsyncIterator[GatewayFactory]:
    """Start gateways on 127.0.0.1, port 0 (``await start_gateway(event_store, **options)``)."""
    started: list[Gateway] = []

    async def start(event_store: Any, **options: Any) -> Gateway:
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 0)
        gateway = Gateway(event_store, **options)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.close()


@pytest.fixture
async def gateway(db: StreamEngine, start_gateway: GatewayFactory) -> Gateway:
    """A gateway over the ``db`` engine's event log, on 127.0.0.1 (closed at teardown)."""
    return await start_gateway(db.events)


@pytest.fixture
def engine(db: StreamEngine) -> StreamEngine:
    """The ``db`` engine with a processor running the gateway tests' task types.

    The processor is stopped by the ``db`` fixture's teardown.
    """
    run_engine(db)
    return db
