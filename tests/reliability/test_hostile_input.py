"""Hostile input, as raw bytes rather than only what a schema describes (schemathesis does
that in test_bridge_load.py): bodies that Python's JSON parser takes but JSON forbids
(NaN, Infinity, lone surrogates), numbers beyond a double or a bigint, deep nesting,
repeated names, bad UTF-8, UTF-16, control characters, random bytes and random edits of
valid messages (tests/hostile_json.py).

- ``/predict`` on the real bridge answers every malformed body with a 4xx and never a 5xx
  (and a body not sent as JSON with 415).
- Every consumer that writes (the scorer: rentals and price requests; the monitor: rentals,
  prices and delays) dead-letters every malformed record, under hostile keys too, and
  goes on: a valid record published after them is stored and both stay ready.
"""

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from producers.replay import rental_events
from rentalstream import services
from runtime.settings import normalised_database_url
from schemas.events import DelayScored, PriceRequest, PriceScored
from schemas.predict import EXAMPLE_CAR, POSITIONAL_ORDER
from tests.conftest import BRIDGE_API_KEY
from tests.hostile_json import MUTATED, draw, hostile

pytestmark = pytest.mark.reliability
KEY = {"X-API-Key": BRIDGE_API_KEY}
BODIES_PER_KIND = 60  # per kind and per body form (one car, a list, positional rows)
RECORDS_PER_KIND = 40  # per kind and per topic
NOT_JSON_TYPES = (
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "text/json",
)
HOSTILE_KEYS = (None, b"\x00", b"\xff\xfe\x00", b"car\x00id", b"42")
READERS = {
    "rentals": ("scorer", "monitor"),
    "price-requests": ("scorer",),
    "prices": ("monitor",),
    "delays": ("monitor",),
}


def predict_cases() -> list[tuple[str, bytes, str | None]]:
    """(kind, body, Content-Type) of every request the bridge is sent."""
    car = hostile(
        EXAMPLE_CAR,
        numbers=[("mileage",), ("engine_power",)],
        texts=[("model_key",)],
        ids=[("mileage",), ("engine_power",)],
    )
    cars = hostile(
        {"cars": [EXAMPLE_CAR, {**EXAMPLE_CAR, "mileage": 20_000}]},
        numbers=[("cars", 1, "mileage")],
        texts=[("cars", 0, "model_key")],
        ids=[("cars", 0, "engine_power")],
    )
    positional = hostile(
        {"input": [[EXAMPLE_CAR[name] for name in POSITIONAL_ORDER]]},
        numbers=[("input", 0, 1), ("input", 0, 2)],
        texts=[("input", 0, 0)],
        ids=[("input", 0, 1)],
    )
    cases = [(kind, body, "application/json") for kind, body in draw(car, BODIES_PER_KIND)]
    # The list form: the hostile variants of {"cars": [...]} with the wrapper taken off.
    cases += [(kind, _unwrapped(body), "application/json") for kind, body in draw(cars, BODIES_PER_KIND)]
    cases += [(kind, body, "application/json") for kind, body in draw(positional, BODIES_PER_KIND)]
    valid = httpx.Request("POST", "/", json=EXAMPLE_CAR).content
    cases += [("not sent as JSON", valid, content_type) for content_type in NOT_JSON_TYPES]
    return cases


def _unwrapped(body: bytes) -> bytes:
    prefix = b'{"cars": '
    return body[len(prefix) : -1] if body.startswith(prefix) and body.endswith(b"}") else body


def test_predict_answers_every_malformed_body_with_a_4xx(scorer_process, scorer_env, bridge_url):
    url = f"http://127.0.0.1:{scorer_env['RENTALSTREAM_SCORER_PORT']}/ready"
    services.wait_ready("scorer", url, scorer_process.pid, time.monotonic() + 120)
    cases = predict_cases()
    statuses: dict[str, Counter] = {}
    with httpx.Client(base_url=bridge_url, timeout=10) as client:
        # What a good body gets, so that a 4xx below is the body's doing, not the bridge's state.
        assert client.post("/predict", json=EXAMPLE_CAR, headers=KEY).status_code == 200
        for kind, body, content_type in cases:
            headers = {**KEY, **({"content-type": content_type} if content_type else {})}
            response = client.post("/predict", content=body, headers=headers)
            statuses.setdefault(kind, Counter())[response.status_code] += 1
            assert response.status_code < 500, (kind, body[:300], response.status_code, response.text[:300])
            if kind != MUTATED:
                assert 400 <= response.status_code < 500, (kind, body[:300], response.status_code, response.text[:300])
            if kind == "not sent as JSON":
                assert response.status_code == 415, (content_type, response.text)
        # A client id the request log could not store (a tab is the one control character HTTP lets through).
        tabbed = client.post("/predict", json=EXAMPLE_CAR, headers={**KEY, "X-Client-Id": "a\tb"})
        assert tabbed.status_code == 422, tabbed.text
        assert client.post("/predict", json=EXAMPLE_CAR, headers=KEY).status_code == 200
    print(f"/predict: {len(cases) + 3:,} requests")
    for kind, counted in statuses.items():
        print(f"  {kind}: {sum(counted.values())}, statuses {dict(sorted(counted.items()))}")
    assert statuses[MUTATED][200] > 0 and sum(statuses[MUTATED].values()) > statuses[MUTATED][200]


def valid_messages(delays_xlsx, pricing_csv) -> dict[str, tuple[dict, dict]]:
    """Per topic: a valid message (as a dict) and the paths ``hostile`` varies in it."""
    rentals = [e for e in rental_events(delays_xlsx, pricing_csv, limit=3000) if e.previous_ended_rental_id]
    rental = rentals[0].model_dump(mode="json")
    now = datetime.now(UTC)
    request = PriceRequest(
        request_id="hostile-0", car=EXAMPLE_CAR, client="fuzzer", listed_price_per_day=80.0
    ).model_dump(mode="json")
    price = PriceScored(
        price_id="rental-1",
        rental_id=1,
        car_id=1,
        price_per_day=100.0,
        price_lower=80.0,
        price_upper=120.0,
        model_name="rentalstream-price",
        model_version="1",
        event_time=now,
        scored_at=now,
    ).model_dump(mode="json")
    delay = DelayScored(
        rental_id=2,
        car_id=1,
        checkin_type="mobile",
        state="ended",
        delay_at_checkout_minutes=30,
        is_late=True,
        previous_ended_rental_id=1,
        planned_gap_minutes=60,
        previous_delay_minutes=90,
        waiting_minutes=30,
        is_conflict=True,
        event_time=now,
        scored_at=now,
    ).model_dump(mode="json")
    return {
        "rentals": (
            rental,
            {
                "numbers": [("delay_at_checkout_minutes",), ("planned_gap_minutes",), ("car", "mileage")],
                "texts": [("car", "model_key")],
                "ids": [("rental_id",), ("car_id",), ("previous_ended_rental_id",)],
            },
        ),
        "price-requests": (
            request,
            {
                "numbers": [("listed_price_per_day",), ("car", "mileage")],
                "texts": [("request_id",), ("client",), ("car", "model_key")],
                "ids": [("car", "engine_power")],
            },
        ),
        "prices": (
            price,
            {
                "numbers": [("price_per_day",), ("price_lower",)],
                "texts": [("price_id",), ("model_version",), ("model_name",)],
                "ids": [("rental_id",), ("car_id",)],
            },
        ),
        "delays": (
            delay,
            {
                "numbers": [("delay_at_checkout_minutes",), ("waiting_minutes",), ("previous_delay_minutes",)],
                "texts": [("checkin_type",)],
                "ids": [("rental_id",), ("car_id",), ("previous_ended_rental_id",)],
            },
        ),
    }


async def publish(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> list[tuple[str, int, int]]:
    """Publish in order; the (topic, partition, offset) of each record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key) for topic, key, value in records]
        return [(m.topic, m.partition, m.offset) for m in await asyncio.gather(*sent)]
    finally:
        await producer.stop()


def dead_letters(url: str) -> dict[str, tuple[bytes, str]]:
    engine = create_engine(normalised_database_url(url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT dead_letter_id, raw_value, reason FROM dead_letters")).all()
    engine.dispose()
    return {row.dead_letter_id: (bytes(row.raw_value), row.reason) for row in rows}


def observed(port: str, topic: str) -> float:
    """The monitor's count of the ``topic``'s events fed to its detectors."""
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "rentalstream_monitor_events_total" and sample.labels.get("topic") == topic:
                return sample.value
    return 0.0


def stored(url: str, sql: str) -> int:
    engine = create_engine(normalised_database_url(url))
    with engine.connect() as conn:
        count = conn.execute(text(sql)).scalar_one()
    engine.dispose()
    return count


def test_every_consumer_dead_letters_hostile_records_and_goes_on(
    scorer_process, monitor_process, monitor_env, clean_database, delays_xlsx, pricing_csv
):
    records: list[tuple[str, bytes | None, bytes]] = []
    kinds: list[str] = []
    for topic, (message, paths) in valid_messages(delays_xlsx, pricing_csv).items():
        for kind, value in draw(hostile(message, **paths), RECORDS_PER_KIND):
            records.append((topic, HOSTILE_KEYS[len(records) % len(HOSTILE_KEYS)], value))
            kinds.append(kind)
    # A price naming a version the registry never had, alone in its batch so that the monitor
    # asks the registry for it: valid, so watched, not dead-lettered.
    unknown_version = valid_messages(delays_xlsx, pricing_csv)["prices"][0] | {"model_version": "987654"}
    unknown = ("prices", b"x", PriceScored.model_validate(unknown_version).model_dump_json().encode())
    (unknown_at,) = asyncio.run(publish(monitor_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], [unknown]))
    monitor_port = monitor_env["RENTALSTREAM_MONITOR_PORT"]
    deadline = time.monotonic() + 60
    while observed(monitor_port, "prices") < 1:
        assert time.monotonic() < deadline, "the monitor did not watch a price of an unknown version"
        time.sleep(0.2)
    # Then one valid rental and one valid price request, after everything else.
    sentinel_rental = rental_events(delays_xlsx, pricing_csv, limit=1)[0]
    sentinel_request = PriceRequest(request_id="hostile-sentinel", car=EXAMPLE_CAR)
    records.append(("rentals", str(sentinel_rental.car_id).encode(), sentinel_rental.model_dump_json().encode()))
    records.append(("price-requests", b"hostile-sentinel", sentinel_request.model_dump_json().encode()))
    kinds += ["valid", "valid"]
    started = time.monotonic()
    where = asyncio.run(publish(monitor_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], records))

    malformed = {
        f"{topic}/{partition}/{offset}/{reader}": value
        for (topic, partition, offset), (_, _, value), kind in zip(where, records, kinds, strict=True)
        if kind not in (MUTATED, "valid")
        for reader in READERS[topic]
    }
    deadline = time.monotonic() + 180
    while True:
        letters = dead_letters(clean_database)
        missing = malformed.keys() - letters.keys()
        rental_in = stored(
            clean_database, f"SELECT count(*) FROM rentals WHERE rental_id = {sentinel_rental.rental_id}"
        )
        request_in = stored(clean_database, "SELECT count(*) FROM price_requests WHERE request_id = 'hostile-sentinel'")
        if not missing and rental_in and request_in:
            break
        assert time.monotonic() < deadline, f"after 180 s: {len(missing)} malformed records without a dead letter"
        time.sleep(0.5)

    for letter_id, value in malformed.items():
        raw, reason = letters[letter_id]
        assert raw == value, letter_id  # the bytes as sent
        assert len(reason) > 10, (letter_id, reason)
    assert "{}/{}/{}/monitor".format(*unknown_at) not in letters
    for port in (monitor_env["RENTALSTREAM_SCORER_PORT"], monitor_env["RENTALSTREAM_MONITOR_PORT"]):
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).status_code == 200
    assert scorer_process.poll() is None and monitor_process.poll() is None
    by_kind = Counter(kind for kind in kinds)
    print(
        f"{len(records) + 1:,} records on {len(READERS)} topics in {time.monotonic() - started:.1f} s, "
        f"{len(malformed):,} dead letters expected and found; by kind: {dict(by_kind)}"
    )
