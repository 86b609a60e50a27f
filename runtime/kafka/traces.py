"""A batch consumer's spans, in the traces its records carry (W3C ``traceparent`` headers).

A batch consumer gives each trace its records carry one span per step (consumed, stored,
published), not one span per batch with links to the traces, as FastStream's
``KafkaTelemetryMiddleware`` does: a ``/predict`` is then one trace from the HTTP request to
the scorer's Postgres transaction and its reply (docs/decisions.md). Records published
together (a replay's chunk, one request's cars) share one trace, so a batch of them costs
one span per step, not one per record. With nothing recorded (``runtime.tracing``), no
record's headers are read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from runtime.kafka.subscriber import KafkaRecord
from runtime.tracing import Headers, carried, recording, tracer

TRACEPARENT = "traceparent"


class _KafkaHeaders(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        values = [value.decode("latin-1") for name, value in carrier if name == key and value is not None]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [name for name, _ in carrier]


KAFKA_HEADERS = _KafkaHeaders()


def traceparent(record: KafkaRecord) -> bytes | None:
    for name, value in getattr(record, "headers", None) or ():
        if name == TRACEPARENT:
            return value
    return None


def kafka_attributes(topic: str, count: int) -> dict[str, str | int]:
    return {"messaging.system": "kafka", "messaging.destination.name": topic, "messaging.batch.message_count": count}


def publishing(topic: str, count: int) -> AbstractContextManager:
    """The span of handing ``count`` records to the producer for ``topic`` (current while
    it lasts, so ``runtime.tracing.carried`` puts it in their headers); nothing when
    traces are off (a no-op span and its context would cost ~15 µs a call)."""
    if not recording():
        return nullcontext()
    return tracer().start_as_current_span(
        f"{topic} publish", kind=SpanKind.PRODUCER, attributes=kafka_attributes(topic, count)
    )


class BatchTraces:
    """Where a batch's spans go: one parent per trace its records carry, keyed by their
    ``traceparent``. Each ``step`` (score the batch, store it, publish its results) is one
    span under each parent, and a step's spans are the parents of the steps under it."""

    __slots__ = ("_carried", "_parents")

    def __init__(self, parents: Mapping[bytes, Context] | None = None) -> None:
        self._parents = dict(parents or {})
        self._carried: dict[bytes, Headers] = {}  # made once per trace, however many records share it

    @classmethod
    def of(cls, records: Sequence[KafkaRecord]) -> BatchTraces:
        """The traces ``records`` carry; none when nothing is recorded (then the records'
        headers are not read)."""
        if not recording():
            return cls()
        parents: dict[bytes, Context] = {}
        for record in records:
            parent = traceparent(record)
            if parent is not None and parent not in parents:
                parents[parent] = propagate.extract([(TRACEPARENT, parent)], getter=KAFKA_HEADERS)
        return cls(parents)

    def __bool__(self) -> bool:
        return bool(self._parents)

    @contextmanager
    def step(
        self, name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping | None = None
    ) -> Iterator[BatchTraces]:
        """``name`` as a span under each parent, around a block (marked failed if it raises);
        the block gets the spans, as the parents of what it does in turn."""
        if not self._parents:
            yield self
            return
        spans = {
            key: tracer().start_span(name, context=parent, kind=kind, attributes=attributes)
            for key, parent in self._parents.items()
        }
        try:
            yield BatchTraces({key: trace.set_span_in_context(span) for key, span in spans.items()})
        except BaseException as error:
            for span in spans.values():
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, repr(error)))
            raise
        finally:
            for span in spans.values():
                span.end()

    def carried(self, record: KafkaRecord) -> Headers:
        """The headers carrying the span of ``record``'s trace, for what is published in its name."""
        key = traceparent(record) if self._parents else None
        if key is None or key not in self._parents:
            return []
        headers = self._carried.get(key)
        if headers is None:
            headers = self._carried[key] = carried(trace.get_current_span(self._parents[key]))
        return headers
