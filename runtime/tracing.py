"""Traces: OpenTelemetry spans, carried between services in Kafka headers (W3C ``traceparent``).

Off unless an OTLP endpoint is configured, with OpenTelemetry's own variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, and the
exporter's ``_HEADERS``, ``_CERTIFICATE``, ``_TIMEOUT``; ``OTEL_SERVICE_NAME`` overrides
the service's name, ``OTEL_TRACES_SAMPLER`` samples). Then each service installs the SDK's
tracer provider, exporting over OTLP/HTTP in the background (``configure``). Off, the API's
no-op tracer answers, no span is started where it would cost per request
(``runtime.kafka.traces.publishing``), and no record's headers are read (``BatchTraces.of``).

How a batch consumer's spans join the traces of its records: ``runtime.kafka.traces``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, Tracer

TRACER = "rentalstream"
Headers = list[tuple[str, bytes]]  # Kafka record headers


def endpoint_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """An OTLP endpoint for traces is set, and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Export this process's spans over OTLP/HTTP as ``service`` (unless ``OTEL_SERVICE_NAME``
    says otherwise), when an endpoint is configured; say whether it is. Spans still queued
    at exit are flushed then (the SDK's ``shutdown_on_exit``), or by ``shutdown``."""
    if not endpoint_configured(environ):
        return False
    # The SDK and its exporter load only when used: ~150 ms of imports a service does without.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def shutdown() -> None:
    """Export the spans still queued and stop exporting; nothing when traces are off. A
    service calls it as it stops: uvicorn ends a process stopped by SIGTERM by raising the
    signal again once the server is down, which skips Python's exit handlers, and with
    them the SDK's own flush at exit."""
    provider = trace.get_tracer_provider()
    if recording() and hasattr(provider, "shutdown"):
        provider.shutdown()


async def shutdown_async() -> None:
    """``shutdown`` off the event loop (an export may wait for the collector)."""
    if recording():
        await asyncio.to_thread(shutdown)


def tracer() -> Tracer:
    return trace.get_tracer(TRACER)


def recording() -> bool:
    """A tracer provider is installed (``configure``, or a test's): spans are kept."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def carried(span: Span | None = None) -> Headers:
    """The Kafka headers carrying ``span``'s context (the current span's by default), for
    the records published under it; none when it is not recorded."""
    if not recording():
        return []
    carrier: dict[str, str] = {}
    context = trace.set_span_in_context(span) if span is not None else None
    propagate.inject(carrier, context=context)
    return [(name, value.encode()) for name, value in carrier.items()]
