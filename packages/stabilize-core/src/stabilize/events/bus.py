"""In-process delivery of committed events to listeners."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from stabilize.models.event import Event

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]


class EventBus:
    """Calls listeners with committed events (progress updates: as soon as emitted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[int, tuple[Listener, str | None]] = {}
        self._next = 0

    def subscribe(self, listener: Listener, workflow_id: str | None = None) -> Callable[[], None]:
        """Call ``listener`` for every event (of one workflow, when given).

        Returns:
            A function that unsubscribes the listener.
        """
        with self._lock:
            key = self._next
            self._next += 1
            self._listeners[key] = (listener, workflow_id)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.pop(key, None)

        return unsubscribe

    @property
    def has_listeners(self) -> bool:
        """True when anyone listens."""
        return bool(self._listeners)

    def publish(self, event: Event) -> None:
        """Deliver one event; a failing listener is logged and does not stop the others."""
        with self._lock:
            targets = list(self._listeners.values())
        for listener, wanted in targets:
            if wanted is None or wanted == event.workflow_id:
                try:
                    listener(event)
                except Exception:
                    log.exception("event listener failed on %s", event.event_type)


_bus = EventBus()


def get_event_bus() -> EventBus:
    """The process-wide event bus."""
    return _bus
