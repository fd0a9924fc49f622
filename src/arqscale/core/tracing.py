"""OpenTelemetry tracing, opt-in: a span for each enqueue and each try, linked by W3C trace context.

The context travels inside the job's payload, as one more key (``tp``: the ``traceparent`` and
``tracestate`` headers) of arq's payload dict. arq reads only ``t f a k et`` and ignores the rest, so
plain arq workers and arq's ``Job.info()`` read our payloads as before, and a plain arq producer's
payloads (which have no ``tp``) simply start a new trace at the worker. No extra Redis key, no extra
command, and nothing at all when tracing is off.

Libraries only speak the OpenTelemetry API: a producer inside an application records spans when the
application configured an SDK, and costs a no-op otherwise. arqscale's own processes (worker, API)
configure the SDK themselves from the standard ``OTEL_*`` variables (``setup_from_env``), and only when
asked: ``OTEL_TRACES_EXPORTER`` other than ``none``, or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``;
``OTEL_SDK_DISABLED=true`` wins. ``opentelemetry`` is imported only then, so a worker's start-up does
not pay for it (issue 16: cold start).

Span names and attributes follow OpenTelemetry's messaging conventions: ``send <queue>`` (PRODUCER) per
job enqueued, ``process <queue>`` (CONSUMER) per try, the producer's span the try's parent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("arqscale.tracing")

# The payload key that carries the context: short, and not one of arq's (t f a k et).
PAYLOAD_KEY = "tp"
SYSTEM = "arq"  # messaging.system: the wire format is arq's
_HEADERS = ("traceparent", "tracestate")
_MAX_HEADER = 512  # W3C: traceparent is 55 characters, tracestate at most 32 members of 256


_provider: Any | None = None  # a tracer provider of our own (tests), else the global one


def _api() -> Any | None:
    """The OpenTelemetry API module when installed (the ``otel`` extra), else None."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def _tracer(trace: Any) -> Any:
    return trace.get_tracer("arqscale", tracer_provider=_provider)


def use_provider(provider: Any | None) -> None:
    """Record arqscale's spans with ``provider`` instead of the global one (None: the global one again).
    For tests and for applications that keep several providers; the global provider can be set only once."""
    global _provider
    _provider = provider


def wanted_by_env(env: Mapping[str, str] | None = None) -> bool:
    """Whether the standard ``OTEL_*`` variables ask for traces (the SDK's own rule for opting in)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class TracingSetupError(RuntimeError):
    """``OTEL_*`` asks for traces, but what it names is not installed or not known."""


def setup_from_env(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Configure the global tracer provider from ``OTEL_*`` for one of arqscale's processes.

    ``service`` is the default ``service.name`` (``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
    override it, as the SDK reads them). Returns whether tracing is on. Exporters: ``otlp`` (HTTP/protobuf,
    from ``opentelemetry-exporter-otlp-proto-http``; its endpoint, headers and timeout come from the
    standard variables) and ``console``; several may be listed, comma separated.
    """
    env = os.environ if env is None else env
    if not wanted_by_env(env):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError as exc:
        raise TracingSetupError(
            f"OTEL_* asks for traces but the OpenTelemetry SDK is not installed ({exc.name}): "
            "pip install 'arqscale[otel]' (the images have it)"
        ) from None
    names = [n.strip().lower() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            if protocol and protocol != "http/protobuf":
                raise TracingSetupError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: arqscale exports OTLP over http/protobuf only"
                )
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise TracingSetupError(
                    "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http: "
                    "pip install 'arqscale[otel]' (the images have it)"
                ) from None
            exporters.append(OTLPSpanExporter())
        elif name != "none":
            raise TracingSetupError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (arqscale knows otlp, console)")
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("tracing on: service %s, exporters %s", resource.attributes.get("service.name"), ", ".join(names))
    return True


def shutdown() -> None:
    """Flush and stop the SDK's exporters (a worker's drain ends here), if an SDK provider is set."""
    trace = _api()
    if trace is None:
        return
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()


def _attributes(queue: str, job_id: str, operation: str, function: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "messaging.operation.type": operation,
        "code.function.name": function,
    }


class SendSpans:
    """The spans of one ``enqueue_many`` call: a ``send <queue>`` span over the call (the write included)
    and, for a batch, a ``create <queue>`` span per job, as the messaging conventions ask, so each job
    carries a context of its own. For a single job the ``send`` span's own context is carried."""

    def __init__(self, trace: Any, span: Any, queue: str, batch: bool) -> None:
        self._trace, self._span, self._queue, self._batch = trace, span, queue, batch

    def headers_for(self, job_id: str, function: str) -> dict[str, str] | None:
        from opentelemetry.propagate import inject

        carrier: dict[str, str] = {}
        if not self._batch:
            for key, value in _attributes(self._queue, job_id, "send", function).items():
                self._span.set_attribute(key, value)
            inject(carrier)
        else:
            tracer = _tracer(self._trace)
            with tracer.start_as_current_span(
                f"create {self._queue}",
                kind=self._trace.SpanKind.PRODUCER,
                attributes=_attributes(self._queue, job_id, "create", function),
            ):
                inject(carrier)
        return {k: v for k, v in carrier.items() if k in _HEADERS} or None


@contextmanager
def send_spans(queue: str, jobs: int) -> Iterator[SendSpans | None]:
    """Spans for an enqueue of ``jobs`` jobs onto ``queue`` (None: tracing off or not recording)."""
    trace = _api()
    if trace is None or (_provider is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)):
        # No SDK set up (the API's default proxy): every span would be a non-recording no-op, and making
        # one per enqueue was ~5 % of the HTTP API's CPU per request.
        yield None
        return
    tracer = _tracer(trace)
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": queue,
        "messaging.operation.type": "send",
    }
    if jobs > 1:
        attributes["messaging.batch.message_count"] = jobs
    with tracer.start_as_current_span(f"send {queue}", kind=trace.SpanKind.PRODUCER, attributes=attributes) as span:
        yield SendSpans(trace, span, queue, jobs > 1) if span.is_recording() else None


@contextmanager
def continued(headers: Mapping[str, str]) -> Iterator[None]:
    """Make the caller's W3C context (an HTTP request's ``traceparent``) current, so the enqueue's spans
    join the caller's trace. Without such headers, or without OpenTelemetry, nothing changes."""
    trace = _api()
    found = {k: headers[k] for k in _HEADERS if k in headers and len(headers[k]) <= _MAX_HEADER}
    if trace is None or not found:
        yield
        return
    from opentelemetry import context
    from opentelemetry.propagate import extract

    token = context.attach(extract(found))
    try:
        yield
    finally:
        context.detach(token)


def carried(payload_dict: Mapping[str, Any]) -> dict[str, str] | None:
    """The trace headers a payload carries, if well-formed enough to hand to the propagator."""
    raw = payload_dict.get(PAYLOAD_KEY)
    if not isinstance(raw, dict):
        return None
    headers = {k: v for k, v in raw.items() if k in _HEADERS and isinstance(v, str) and len(v) <= _MAX_HEADER}
    return headers or None


@contextmanager
def process_span(
    queue: str, job_id: str, function: str, job_try: int, headers: Mapping[str, str] | None
) -> Iterator[Any | None]:
    """A CONSUMER span around one try, child of the enqueue's span when the payload carried it.

    Yields the span (None when tracing is off). The caller sets the outcome; an exception escaping the
    task is recorded by the caller too (the worker turns it into an outcome, it never propagates here)."""
    trace = _api()
    if trace is None or (_provider is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)):
        # No SDK set up (the API's default proxy): every span would be a non-recording no-op, and making
        # one per enqueue was ~5 % of the HTTP API's CPU per request.
        yield None
        return
    tracer = _tracer(trace)
    parent = None
    if headers:
        from opentelemetry.propagate import extract

        parent = extract(dict(headers))  # the propagator ignores malformed values: a new trace then
    attributes = _attributes(queue, job_id, "process", function)
    attributes["messaging.message.delivery_count"] = job_try  # arq's job_try: 1 on the first try
    with tracer.start_as_current_span(
        f"process {queue}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span if span.is_recording() else None


def note_error(error: str, exc: BaseException | None = None) -> None:
    """Record a try's error on the current ``process`` span (called inside ``process_span``)."""
    trace = _api()
    if trace is None:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    if exc is not None:
        span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, error[:256]))


def end_try(span: Any | None, outcome: str) -> None:
    """Mark a try's span with its outcome: complete, retried, dead, cancelled or put_back."""
    if span is not None:
        span.set_attribute("arqscale.job.outcome", outcome)
