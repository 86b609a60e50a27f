"""What the bridge answers before anything reaches Kafka, and how it routes replies.

No broker here: the app is exercised without its lifespan, so a request that passes
every check meets a bridge whose reply consumer is not reading, and gets a 503.
"""

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from producers.bridge import build_app
from runtime.kafka.request_reply import PriceRequester
from runtime.settings import Settings
from schemas.events import PriceScored
from schemas.predict import POSITIONAL_ORDER
from tests.helpers import SAMPLE_CAR


@pytest.fixture
def client() -> TestClient:
    settings = Settings(
        kafka={"bootstrap": "127.0.0.1:9"},
        registry={"tracking_uri": "sqlite:///unused.db"},
        bridge={"api_key": "k", "max_cars": 3, "max_body_bytes": 2048},
    )
    return TestClient(build_app(settings), headers={"X-API-Key": "k"})


def test_a_valid_request_to_a_bridge_not_reading_replies_is_refused_at_once(client):
    response = client.post("/predict", json=SAMPLE_CAR)
    assert response.status_code == 503
    assert response.json()["request_id"] == response.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("body", "loc", "reason"),
    [
        ({**SAMPLE_CAR, "fuel": "steam"}, ["body", "car", "fuel"], "unknown fuel 'steam'"),
        ({**SAMPLE_CAR, "mileage": -1}, ["body", "car", "mileage"], "greater than or equal to 0"),
        (
            {k: v for k, v in SAMPLE_CAR.items() if k != "engine_power"},
            ["body", "car", "engine_power"],
            "Field required",
        ),
        ({**SAMPLE_CAR, "colour": "red"}, ["body", "car", "colour"], "Extra inputs are not permitted"),
        ([SAMPLE_CAR] * 4, ["body", "cars"], "at most 3 items"),
        ([], ["body", "cars"], "at least 1 item"),
        (
            {"input": [["Renault", 1]]},
            ["body", "positional", "input", 0],
            "expected 13 values in this order: model_key",
        ),
        (
            {"input": [["Renault", "far", 110, "diesel", "grey", "estate", *[False] * 7]]},
            ["body", "positional", "input", 0, "mileage"],
            "valid integer",
        ),
        ("a car", ["body"], 'expected a car object, a list of cars, or {"input"'),
    ],
)
def test_invalid_input_is_a_422_naming_the_field_and_the_reason(client, body, loc, reason):
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(e["loc"] == loc and reason in e["msg"] for e in errors), errors


def test_a_body_over_the_limit_is_a_413(client):
    response = client.post("/predict", content=b"[" + b" " * 2100 + b"]", headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "K"}, {"X-API-Key": "kk"}])
def test_without_the_right_api_key_it_is_a_401(client, headers):
    response = client.post("/predict", json=SAMPLE_CAR, headers={"X-API-Key": ""} | headers)
    assert response.status_code == 401


def test_docs_give_the_positional_order_with_an_example(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert ", ".join(POSITIONAL_ORDER) in schema["info"]["description"]
    examples = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert examples["positional"]["value"]["input"][0][:3] == ["Citroën", 140411, 100]
    assert client.get("/health").json() == {"status": "alive"}


def reply(request_id: str, price: float = 90.0) -> SimpleNamespace:
    """A reply record as the bridge's consumer reads it."""
    now = datetime.now(UTC)
    value = (
        PriceScored(
            price_id=request_id,
            request_id=request_id,
            price_per_day=price,
            model_name="m",
            model_version="7",
            event_time=now,
            scored_at=now,
        )
        .model_dump_json()
        .encode()
    )
    return SimpleNamespace(value=value, headers=())


def test_a_reply_goes_to_its_own_caller_only_and_a_late_one_is_counted():
    late = []
    requester = PriceRequester(
        "127.0.0.1:9", "price-requests", "price-replies", 10, on_late_reply=lambda: late.append(1)
    )
    mine, other = requester.new_request_id(), requester.new_request_id()

    async def scenario():
        waiting = asyncio.get_running_loop().create_future()
        requester._pending[f"{mine}/0"] = waiting
        requester._deliver(reply(f"{other}/0"))  # ours, but nobody waits for it: late
        requester._deliver(reply("another-bridge-1234/0", 1.0))  # not ours: ignored, not counted
        requester._deliver(SimpleNamespace(value=b"not json", headers=()))
        assert not waiting.done()
        requester._deliver(reply(f"{mine}/0", 42.0))
        requester._deliver(reply(f"{mine}/0", 43.0))  # a redelivered duplicate
        return await waiting

    answer = asyncio.run(scenario())
    assert (answer.price_per_day, answer.model_version) == (42.0, "7")
    assert len(late) == 2
    assert requester.last_model == ("m", "7")


def test_every_answer_is_timed_by_route_and_status_even_the_refusals(client):
    client.post("/predict", json={**SAMPLE_CAR, "fuel": "steam"})
    client.post("/predict", json=SAMPLE_CAR, headers={"X-API-Key": "wrong"})
    client.get("/no/such/page/1")
    client.get("/no/such/page/2")
    counts = {
        (s.labels["path"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name == "rentalstream_bridge_response_seconds_count"
    }
    assert counts == {("/predict", "422"): 1, ("/predict", "401"): 1, ("unmatched", "404"): 2}
