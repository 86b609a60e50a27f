"""Traces across the services: a /predict, and a replay, each one trace from its first
span to Postgres and the results (and, for the replay, on to the monitor), exported over
OTLP/HTTP to a receiver (tests/otlp.py) by the real processes, which carry the trace
between them in Kafka headers."""

import asyncio
import secrets
import time

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from sqlalchemy import create_engine, text

from rentalstream import services
from runtime.postgres import roles
from runtime.settings import normalised_database_url
from tests import helpers
from tests.conftest import BRIDGE_API_KEY, as_role
from tests.helpers import SAMPLE_CAR, read_topic, run_cli, service_process
from tests.otlp import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.e2e

BRIDGE, SCORER, REPLAY = "rentalstream-bridge", "rentalstream-scorer", "rentalstream-replay"
MONITOR = "rentalstream-monitor"
CONSUMER = Span.SPAN_KIND_CONSUMER


@pytest.fixture
def otlp():
    with OtlpReceiver().running() as receiver:
        yield receiver


@pytest.fixture
def scorer_env(scorer_env, otlp):
    """Every process of the test exports its spans to the receiver, within 0.1 s."""
    return {**scorer_env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}


def stored(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM rentals")).scalar_one()


def named(spans: list[ReceivedSpan], service: str, name: str, kind: int) -> list[ReceivedSpan]:
    return [s for s in spans if (s.service, s.name, s.kind) == (service, name, kind)]


def wait_for(otlp: OtlpReceiver, trace_id: str, complete, seconds: float = 30) -> list[ReceivedSpan]:
    deadline = time.monotonic() + seconds
    while True:
        spans = otlp.trace(trace_id)
        if complete(spans):
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(
                f"trace {trace_id} incomplete after {seconds} s: {[(s.service, s.name) for s in spans]}"
            )
        time.sleep(0.2)


def children(parents: list[ReceivedSpan], spans: list[ReceivedSpan]) -> bool:
    ids = {p.span_id for p in parents}
    return bool(spans) and all(s.parent_span_id in ids for s in spans)


def test_one_predict_is_one_trace_from_the_bridge_through_the_scorer_and_postgres_to_the_reply(
    otlp, scorer_env, scorer_process, bridge_url, tmp_path
):
    scorer_url = f"http://127.0.0.1:{scorer_env['RENTALSTREAM_SCORER_PORT']}"
    services.wait_ready("scorer", f"{scorer_url}/ready", scorer_process.pid, time.monotonic() + 120)
    assert httpx.get(f"{bridge_url}/health").status_code == 200
    cars = [SAMPLE_CAR, {**SAMPLE_CAR, "mileage": 51_000}]
    for _ in range(5):  # the scorer's first answer may miss the bridge's 2-s timeout while it warms up
        caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
        response = httpx.post(
            f"{bridge_url}/predict",
            json=cars,
            headers={"X-API-Key": BRIDGE_API_KEY, "traceparent": f"00-{caller_trace}-{caller_span}-01"},
            timeout=10,
        )
        if response.status_code != 504:
            break
    assert response.status_code == 200, response.text

    def complete(spans):
        # Each service exports on its own schedule: the bridge's spans can all be in while
        # the scorer's are still on their way.
        processed = named(spans, SCORER, "price-requests process", Span.SPAN_KIND_CONSUMER)
        scorer_done = bool(processed) and all(
            len(named(spans, SCORER, name, kind)) == len(processed)
            for name, kind in (("postgres store", Span.SPAN_KIND_CLIENT), ("results publish", Span.SPAN_KIND_PRODUCER))
        )
        bridge_done = len(named(spans, BRIDGE, "price-replies receive", Span.SPAN_KIND_CONSUMER)) == len(cars) and any(
            s.name == "POST /predict" for s in spans
        )
        return scorer_done and bridge_done

    spans = wait_for(otlp, caller_trace, complete)
    (server,) = named(spans, BRIDGE, "POST /predict", Span.SPAN_KIND_SERVER)
    (published,) = named(spans, BRIDGE, "price-requests publish", Span.SPAN_KIND_PRODUCER)
    processed = named(spans, SCORER, "price-requests process", Span.SPAN_KIND_CONSUMER)
    stored = named(spans, SCORER, "postgres store", Span.SPAN_KIND_CLIENT)
    replied = named(spans, SCORER, "results publish", Span.SPAN_KIND_PRODUCER)
    received = named(spans, BRIDGE, "price-replies receive", Span.SPAN_KIND_CONSUMER)

    # The bridge continues the caller's trace, and each hop is the child of the one before.
    assert server.parent_span_id == caller_span
    assert published.parent_span_id == server.span_id
    assert published.attributes["messaging.batch.message_count"] == len(cars)
    assert children([published], processed)  # the scorer's batch (one, or one per car)
    assert sum(s.attributes["messaging.batch.message_count"] >= 1 for s in processed) == len(processed)
    assert children(processed, stored) and len(stored) == len(processed)
    assert children(processed, replied) and len(replied) == len(processed)
    assert children(replied, received)
    # Postgres holds each price before its reply leaves, and the HTTP answer waits for both replies.
    assert max(s.end_ns for s in stored) <= min(s.start_ns for s in replied)
    assert all(s.status_code != Status.STATUS_CODE_ERROR for s in spans)
    assert server.end_ns >= max(s.start_ns for s in received)
    # The probes are not traced, and no span carries the caller's key.
    assert not [s for s in otlp.spans if "/health" in s.name]
    assert not [s for s in otlp.spans if BRIDGE_API_KEY in repr(s.attributes)]


def test_a_replay_chunk_is_one_trace_through_the_scorer_and_postgres_to_the_results_and_the_monitor(
    otlp, scorer_env, monitor_process, tmp_path
):
    """The scorer here exports only when it stops (its schedule is an hour): a service
    stopped by SIGTERM still sends its last spans. Its prices and delay facts carry the
    trace on, to the monitor."""
    scorer_url = f"http://127.0.0.1:{scorer_env['RENTALSTREAM_SCORER_PORT']}"
    env = {**scorer_env, "OTEL_BSP_SCHEDULE_DELAY": "3600000"}
    env["RENTALSTREAM_DATABASE_URL"] = as_role(env["RENTALSTREAM_DATABASE_URL"], roles.SCORER)
    with service_process("scorer", env, tmp_path / "scorer.log") as scorer:
        services.wait_ready("scorer", f"{scorer_url}/ready", scorer.pid, time.monotonic() + 120)
        result = run_cli(scorer_env, "replay", "--limit", "40")
        assert result.returncode == 0, result.stderr
        engine = create_engine(normalised_database_url(scorer_env["RENTALSTREAM_DATABASE_URL"]))
        try:
            helpers.wait_for(
                lambda: stored(engine) == 40, 60, "the replay to be stored", scorer, tmp_path / "scorer.log"
            )
        finally:
            engine.dispose()
        assert not [s for s in otlp.spans if s.service == SCORER]  # queued in the scorer
    # service_process stopped it with SIGTERM.

    (published,) = [s for s in otlp.spans if (s.service, s.name) == (REPLAY, "rentals publish")]
    assert published.kind == Span.SPAN_KIND_PRODUCER
    assert published.attributes["messaging.batch.message_count"] == 40

    def counted(spans, service: str, name: str) -> int:
        return sum(s.attributes["messaging.batch.message_count"] for s in named(spans, service, name, CONSUMER))

    def complete(spans):
        processed = named(spans, SCORER, "rentals process", CONSUMER)
        return (
            counted(spans, SCORER, "rentals process") >= 40
            and len(named(spans, SCORER, "results publish", Span.SPAN_KIND_PRODUCER)) == len(processed)
            and counted(spans, MONITOR, "rentals process") >= 40
            and counted(spans, MONITOR, "prices process") >= 40
        )

    spans = wait_for(otlp, published.trace_id, complete)
    processed = named(spans, SCORER, "rentals process", CONSUMER)
    assert children([published], processed)
    assert children(processed, named(spans, SCORER, "postgres store", Span.SPAN_KIND_CLIENT))
    results = named(spans, SCORER, "results publish", Span.SPAN_KIND_PRODUCER)
    assert children(processed, results)
    # Each price, and the delay facts of these rentals, carry the trace on from the scorer's publish ...
    prices = asyncio.run(read_topic(scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], "prices"))
    delays = asyncio.run(read_topic(scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], "delays"))
    # (A fact published again for an earlier batch's rental, when its previous rental
    # arrives later, carries no trace: it belongs to neither batch alone.)
    traced_delays = [r for r in delays if "traceparent" in dict(r.headers)]
    assert len(prices) == 40 and traced_delays
    publish_ids = {s.span_id for s in results}
    for record in [*prices, *traced_delays]:
        _, trace_id, parent_id, _ = dict(record.headers)["traceparent"].decode().split("-")
        assert trace_id == published.trace_id and parent_id in publish_ids, record
    # ... to the monitor, which watches the rentals in the replay's span and the prices in the scorer's.
    assert children([published], named(spans, MONITOR, "rentals process", CONSUMER))
    assert children(results, named(spans, MONITOR, "prices process", CONSUMER))
    assert children(results, named(spans, MONITOR, "delays process", CONSUMER))
