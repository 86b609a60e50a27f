"""A batch's spans in the traces its records carry (runtime/kafka/traces.py), recorded with
the OpenTelemetry SDK's in-memory exporter; and nothing read or kept when traces are off."""

from types import SimpleNamespace

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from runtime import tracing
from runtime.kafka.traces import BatchTraces

TRACE_A, PARENT_A = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACE_B, PARENT_B = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


def record(offset: int, trace_id: str | None = None, parent: str | None = None) -> SimpleNamespace:
    headers = [("content-type", b"application/json")]
    if trace_id:
        headers.append(("traceparent", f"00-{trace_id}-{parent}-01".encode()))
    return SimpleNamespace(topic="price-requests", partition=0, offset=offset, key=None, value=b"{}", headers=headers)


def test_each_step_of_a_batch_is_one_span_in_each_trace_its_records_carry(exported_spans):
    batch = [record(0, TRACE_A, PARENT_A), record(1, TRACE_B, PARENT_B), record(2, TRACE_A, PARENT_A), record(3)]

    with BatchTraces.of(batch).step("price-requests process", SpanKind.CONSUMER) as processed:
        pass
    with processed.step("postgres store", SpanKind.CLIENT):
        pass
    with processed.step("results publish", SpanKind.PRODUCER) as published:
        reply_headers = dict(published.carried(batch[1]))
        assert published.carried(batch[3]) == []  # an untraced record's results carry nothing

    spans = exported_spans.get_finished_spans()
    by_name = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert sorted(by_name) == ["postgres store", "price-requests process", "results publish"]
    assert all(len(steps) == 2 for steps in by_name.values())  # two traces, whatever the records
    process = {f"{s.context.trace_id:032x}": s for s in by_name["price-requests process"]}
    assert {t: f"{s.parent.span_id:016x}" for t, s in process.items()} == {TRACE_A: PARENT_A, TRACE_B: PARENT_B}
    assert all(s.parent.is_remote for s in process.values())
    for name in ("postgres store", "results publish"):
        for span in by_name[name]:
            assert span.parent.span_id == process[f"{span.context.trace_id:032x}"].context.span_id
    publish_b = next(s for s in by_name["results publish"] if f"{s.context.trace_id:032x}" == TRACE_B)
    assert reply_headers == {"traceparent": f"00-{TRACE_B}-{publish_b.context.span_id:016x}-01".encode()}


def test_a_step_that_raises_is_a_failed_span_and_the_error_goes_on(exported_spans):
    with pytest.raises(ConnectionError), BatchTraces.of([record(0, TRACE_A, PARENT_A)]).step("postgres store"):
        raise ConnectionError("the database went away")
    (span,) = exported_spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_a_batch_without_a_traced_record_makes_no_span(exported_spans):
    with BatchTraces.of([record(0), record(1)]).step("rentals process") as processed:
        assert not processed
    assert exported_spans.get_finished_spans() == ()


def test_with_traces_off_no_record_is_read_and_nothing_is_kept():
    assert not tracing.recording()  # no provider installed in the tests' process

    class Unreadable:
        @property
        def headers(self):
            raise AssertionError("a record's headers were read with traces off")

    with BatchTraces.of([Unreadable()]).step("rentals process") as processed:
        assert not processed
        assert processed.carried(Unreadable()) == []
    assert tracing.carried() == []  # nothing injected into what is published


@pytest.mark.parametrize(
    ("environ", "configured"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "True"}, False),
    ],
)
def test_traces_are_exported_only_when_an_endpoint_is_set_and_the_sdk_is_not_disabled(environ, configured):
    assert tracing.endpoint_configured(environ) is configured
