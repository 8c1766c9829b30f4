"""OpenTelemetry traces and metrics of the engine (the ``observability`` extra).

Off until :func:`configure_tracing` is called: the processor then checks one module
global per step, and nothing of OpenTelemetry is imported before.

Traces. Every span of a workflow, in every process, belongs to one trace whose id is
derived from the workflow id (:func:`workflow_trace_id`), so a collector joins the work of
all workers without any context passed between them:

- ``stabilize.workflow`` (when it ends), parent of its stages;
- ``stabilize.stage`` (when it ends), parent of its task runs;
- ``stabilize.task`` (each run of a task's user code);
- ``stabilize.commit`` (each processor transaction that did work), linked to the workflows
  it touched.

Workflow and stage spans get span ids derived from the workflow and stage ids, so that a
task run recorded by one process names as parent the stage span another process records
later. That needs the id generator of :func:`configure_tracing`'s own provider; with a
provider of yours, pass ``id_generator=WorkflowIdGenerator()`` to it (otherwise the spans
still share the trace, but stage and workflow spans get random ids).

Metrics: ``stabilize.queue.depth`` (messages queued, per database), ``stabilize.claim_to_start``
(seconds from claiming a task's message to its user code starting), ``stabilize.task.duration``
(seconds per run, by task and status), ``stabilize.task.retries`` and
``stabilize.dead_letters`` (counters).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from stabilize.models.workflow import Workflow
    from stabilize.queue.processor._runner import InFlight
    from stabilize.records import EventDraft

P = ParamSpec("P")
log = logging.getLogger("stabilize.tracing")

INSTALL_HINT = 'tracing needs OpenTelemetry: pip install "stabilize-core[observability]"'
_STAGE_END = frozenset({"stage.completed", "stage.failed", "stage.canceled", "stage.skipped"})
_WORKFLOW_END = frozenset({"workflow.completed", "workflow.failed", "workflow.canceled"})

observer: Observer | None = None

_queues: weakref.WeakSet[Any] = weakref.WeakSet()
"""The processors of this process, for the queue-depth gauge (see :func:`track_queue`)."""


def track_queue(processor: Any) -> None:
    """Count ``processor``'s queue in the queue-depth gauge while it exists.

    Processors call this when they are made, so that this module needs no import of theirs.
    """
    _queues.add(processor)


"""The active observer; None while tracing is off (the processor checks this only)."""


def workflow_trace_id(workflow_id: str) -> int:
    """The 128-bit trace id of every span of ``workflow_id``."""
    return _nonzero(int.from_bytes(_digest("trace", workflow_id)[:16], "big"))


def entity_span_id(entity_id: str) -> int:
    """The 64-bit span id of a workflow's or a stage's own span."""
    return _nonzero(int.from_bytes(_digest("span", entity_id)[:8], "big"))


def _digest(kind: str, text: str) -> bytes:
    return hashlib.sha256(f"stabilize:{kind}:{text}".encode()).digest()


def _nonzero(value: int) -> int:
    return value or 1


def _import_otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ModuleNotFoundError(INSTALL_HINT) from exc
    return trace


class WorkflowIdGenerator:
    """An OpenTelemetry id generator that lets the engine choose span and trace ids.

    Outside the engine's own spans it generates random ids, like the SDK's default.
    """

    def __init__(self) -> None:
        # Per thread: task spans are made on other threads while the processor forces ids.
        self._local = threading.local()
        self._random = random.SystemRandom()

    def _forced(self) -> tuple[int, int] | None:
        return getattr(self._local, "forced", None)

    def generate_span_id(self) -> int:
        """The forced span id, if the engine set one on this thread, else a random one."""
        forced = self._forced()
        return forced[0] if forced is not None else (self._random.getrandbits(64) or 1)

    def generate_trace_id(self) -> int:
        """The forced trace id, if the engine set one on this thread, else a random one."""
        forced = self._forced()
        return forced[1] if forced is not None else (self._random.getrandbits(128) or 1)

    def is_trace_id_random(self) -> bool:
        """False while the engine forces ids on this thread (the SDK asks)."""
        return self._forced() is None

    @contextmanager
    def forcing(self, span_id: int, trace_id: int) -> Iterator[None]:
        """Within the block, spans this thread starts get these ids."""
        previous = self._forced()
        self._local.forced = (span_id, trace_id)
        try:
            yield
        finally:
            self._local.forced = previous


def _never_raises(method: Callable[P, None]) -> Callable[P, None]:
    """Telemetry must not fail the engine: an error is logged and dropped.

    Each hook logs its first failure per observer only.
    """

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            reported: set[str] = args[0]._reported  # type: ignore[attr-defined]
            if method.__name__ not in reported:
                reported.add(method.__name__)
                log.exception("telemetry hook %s failed; its data is dropped", method.__name__)

    return call


class Observer:
    """Turns what the processor does into spans and metrics (built by configure_tracing)."""

    def __init__(
        self,
        tracer: Tracer,
        meter_provider: MeterProvider | None,
        ids: WorkflowIdGenerator | None,
    ) -> None:
        from opentelemetry import context, metrics, trace

        self._trace = trace
        self._root = context.Context()  # engine spans never nest under a caller's span
        self.tracer = tracer
        self._ids = ids
        self._reported: set[str] = set()
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("stabilize")
        self.claim_to_start = meter.create_histogram(
            "stabilize.claim_to_start", unit="s", description="claim of a task to its start"
        )
        self.task_duration = meter.create_histogram(
            "stabilize.task.duration", unit="s", description="one run of a task's user code"
        )
        self.retries = meter.create_counter(
            "stabilize.task.retries", description="task runs retried after a transient error"
        )
        self.dead_letters = meter.create_counter(
            "stabilize.dead_letters", description="messages moved to the dead-letter table"
        )
        meter.create_observable_gauge(
            "stabilize.queue.depth",
            callbacks=[self._queue_depth],
            description="messages in the queue (due or not)",
        )

    # -- contexts ------------------------------------------------------------------

    def _parent(self, workflow_id: str, span_id: int) -> Any:
        trace = self._trace
        context = trace.SpanContext(
            trace_id=workflow_trace_id(workflow_id),
            span_id=span_id,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(context))

    # -- hooks the processor calls ---------------------------------------------------

    @_never_raises
    def task_started(self, flight: InFlight) -> None:
        """User code of ``flight`` starts now."""
        flight.started_ns = time.time_ns()
        self.claim_to_start.record(max(0.0, time.monotonic() - flight.claimed_at))

    @_never_raises
    def task_finished(
        self, flight: InFlight, status: str, error: BaseException | None = None
    ) -> None:
        """User code of ``flight`` ended (``status``: its result's, or ``ERROR``)."""
        end = time.time_ns()
        start = flight.started_ns or end
        stage = flight.stage
        task = next((t for t in stage.tasks if t.id == flight.task_id), None)
        name = task.name if task is not None else flight.task_id
        kind = task.implementing_class if task is not None else ""
        self.task_duration.record((end - start) / 1e9, {"task": kind, "status": status})
        workflow_id = stage.workflow_id or flight.msg.workflow_id
        span = self.tracer.start_span(
            f"task {name}",
            context=self._parent(workflow_id, entity_span_id(stage.id)),
            start_time=start,
            attributes={
                "stabilize.workflow_id": workflow_id,
                "stabilize.stage_id": stage.id,
                "stabilize.stage_ref": stage.ref_id,
                "stabilize.task_id": flight.task_id,
                "stabilize.task_name": name,
                "stabilize.task_type": kind,
                "stabilize.status": status,
                "stabilize.attempt": flight.retry_count,
            },
        )
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)[:500]))
        span.end(end_time=end)

    @_never_raises
    def retried(self, kind: str) -> None:
        """A task run ended in a retry."""
        self.retries.add(1, {"task": kind})

    @_never_raises
    def dead_lettered(self, kind: str) -> None:
        """A message was dead-lettered."""
        self.dead_letters.add(1, {"kind": kind})

    @_never_raises
    def committed(
        self, started_ns: int, acked: int, claimed: int, saved: list[tuple[Workflow, EventDraft]]
    ) -> None:
        """A processor transaction committed; ``saved`` holds the ends it recorded."""
        end = time.time_ns()
        trace = self._trace
        workflow_ids = sorted({wf.id for wf, _ in saved})
        links = [
            trace.Link(
                trace.SpanContext(
                    workflow_trace_id(i), entity_span_id(i), True, trace.TraceFlags(1)
                )
            )
            for i in workflow_ids
        ]
        span = self.tracer.start_span(
            "stabilize.commit",
            context=self._root,
            start_time=started_ns,
            links=links,
            attributes={"stabilize.acked": acked, "stabilize.claimed": claimed},
        )
        span.end(end_time=end)
        for wf, event in saved:
            self._entity_span(wf, event, end)

    def _entity_span(self, wf: Workflow, event: EventDraft, end: int) -> None:
        if event.event_type in _WORKFLOW_END:
            name, entity_id, parent = f"workflow {wf.name}", wf.id, self._root
            start_ms, status, ref = wf.start_time, wf.status.value, None
        else:
            stage = wf.index.by_id.get(event.entity_id)
            if stage is None:
                return
            name, entity_id = f"stage {stage.ref_id}", stage.id
            parent = self._parent(wf.id, entity_span_id(wf.id))
            start_ms, status, ref = stage.start_time, stage.status.value, stage.ref_id
        start = start_ms * 1_000_000 if start_ms else end
        attributes: dict[str, Any] = {"stabilize.workflow_id": wf.id, "stabilize.status": status}
        if ref is not None:
            attributes.update({"stabilize.stage_id": entity_id, "stabilize.stage_ref": ref})
        with self._forcing(entity_span_id(entity_id), workflow_trace_id(wf.id)):
            span = self.tracer.start_span(
                name, context=parent, start_time=start, attributes=attributes
            )
        if status in ("TERMINAL", "STOPPED"):
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, status))
        span.end(end_time=max(start, end))

    @contextmanager
    def _forcing(self, span_id: int, trace_id: int) -> Iterator[None]:
        if self._ids is None:
            yield
            return
        with self._ids.forcing(span_id, trace_id):
            yield

    def _queue_depth(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        seen: dict[str, int] = {}
        for processor in list(_queues):
            location = processor.backend.location
            if location in seen:
                continue
            try:
                seen[location] = processor._queue_depth()[0]
            except Exception:
                continue  # a database that does not answer has no depth to report
        return [Observation(depth, {"stabilize.database": loc}) for loc, depth in seen.items()]


def ends_of(events: Iterable[EventDraft]) -> list[EventDraft]:
    """The stage and workflow ends among ``events`` (what gets a span)."""
    return [e for e in events if e.event_type in _STAGE_END or e.event_type in _WORKFLOW_END]


def configure_tracing(
    exporter: SpanExporter | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    service_name: str = "stabilize",
) -> TracerProvider:
    """Turn on spans and metrics of the engine.

    Args:
        exporter: Where spans go (``OTLPSpanExporter()``, ``InMemorySpanExporter()``, ...),
            through a simple processor on a provider built here, whose ids tie
            every process's spans of one workflow into one tree.
        tracer_provider: Use this provider instead (give it ``WorkflowIdGenerator()``
            as ``id_generator`` to keep the tree; see the module docstring).
        meter_provider: Where metrics go (default: OpenTelemetry's global one).
        service_name: The ``service.name`` resource of a provider built here.

    Returns:
        The tracer provider in use.

    Raises:
        ModuleNotFoundError: OpenTelemetry is not installed (the message says what to install).
    """
    global observer
    _import_otel()
    ids: WorkflowIdGenerator | None = None
    if tracer_provider is None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        ids = WorkflowIdGenerator()
        provider = SdkTracerProvider(
            resource=Resource.create({"service.name": service_name}),
            id_generator=ids,  # type: ignore[arg-type]  # duck-typed: the SDK calls two methods
        )
        if exporter is not None:
            simple = type(exporter).__name__ == "InMemorySpanExporter"
            span_processor = SimpleSpanProcessor if simple else BatchSpanProcessor
            provider.add_span_processor(span_processor(exporter))
        tracer_provider = provider
    else:
        generator = getattr(tracer_provider, "id_generator", None)
        ids = generator if isinstance(generator, WorkflowIdGenerator) else None
    observer = Observer(tracer_provider.get_tracer("stabilize"), meter_provider, ids)
    return tracer_provider


def disable_tracing() -> None:
    """Turn spans and metrics off again."""
    global observer
    observer = None


def get_tracer(name: str = "stabilize") -> Tracer:
    """An OpenTelemetry tracer (OpenTelemetry's global provider's).

    Args:
        name: The instrumentation scope's name.

    Returns:
        The tracer from OpenTelemetry's global tracer provider.

    Raises:
        ModuleNotFoundError: OpenTelemetry is not installed (the message says what to install).
    """
    return _import_otel().get_tracer(name)  # type: ignore[no-any-return]


@contextmanager
def trace_operation(name: str, **attributes: Any) -> Iterator[Span]:
    """A span around a block of your code (inside a task: a child of nothing, alone).

    Args:
        name: The span's name.
        **attributes: Attributes set on the span when it starts.

    Yields:
        The span, current inside the ``with`` block.

    Raises:
        ModuleNotFoundError: OpenTelemetry is not installed (the message says what to install).
    """
    with get_tracer().start_as_current_span(name, attributes=attributes) as span:
        yield span


def add_event(name: str, **attributes: Any) -> None:
    """Add an event to the current span, if any.

    Without a current span nothing is recorded.

    Args:
        name: The event's name.
        **attributes: The event's attributes.

    Raises:
        ModuleNotFoundError: OpenTelemetry is not installed (the message says what to install).
    """
    _import_otel().get_current_span().add_event(name, attributes=attributes)


def set_attribute(key: str, value: Any) -> None:
    """Set an attribute on the current span, if any.

    Without a current span nothing is recorded.

    Args:
        key: The attribute's name.
        value: Its value (a string, number, boolean or a sequence of one of those).

    Raises:
        ModuleNotFoundError: OpenTelemetry is not installed (the message says what to install).
    """
    _import_otel().get_current_span().set_attribute(key, value)
