"""The HTTP bridge against the real broker, Postgres and scorer processes."""

import asyncio
import re
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from runtime.settings import normalised_database_url
from schemas.cars import EQUIPMENT
from schemas.predict import POSITIONAL_ORDER
from tests.conftest import BRIDGE_API_KEY
from tests.helpers import (
    SAMPLE_CAR,
    champion,
    champion_estimate,
    cli,
    expected_prices,
    interval_ratios,
    metric_samples,
    run_cli,
    service_process,
    wait_for,
)
from training.features import build_features

pytestmark = pytest.mark.e2e

KEY = {"X-API-Key": BRIDGE_API_KEY}
# A full car in a caller's spelling: "citroen" is the training data's "Citroën".
CAR = {
    "model_key": "citroen",
    "mileage": 140411,
    "engine_power": 100,
    "fuel": "Diesel",
    "paint_color": "black",
    "car_type": "convertible",
    "private_parking_available": True,
    "has_gps": True,
    "has_air_conditioning": False,
    "automatic_car": False,
    "has_getaround_connect": True,
    "has_speed_regulator": True,
    "winter_tires": True,
}
TRAINING_SPELLING = {"model_key": "Citroën", "fuel": "diesel"}


def metric(url: str, name: str) -> float:
    samples = metric_samples(url, name)
    assert samples, f"{name} not in /metrics"
    return next(iter(samples.values()))


def warm_up(url: str) -> int:
    """The scorer's consumer group takes a few seconds to get its partitions. Returns how
    many requests timed out (504) meanwhile: the scorer answers them once it has joined."""
    statuses = []

    def answered() -> bool:
        statuses.append(httpx.post(f"{url}/predict", json=SAMPLE_CAR, headers=KEY, timeout=10).status_code)
        return statuses[-1] == 200

    wait_for(answered, 90, "a first answer through the bridge")
    return statuses.count(504)


def test_every_request_shape_is_priced_like_the_model_and_logged(
    scorer_process, bridge_url, mlflow_registry, clean_database
):
    version, model = champion(mlflow_registry)
    warm_up(bridge_url)
    tasks_before = metric(bridge_url, "rentalstream_bridge_asyncio_tasks")
    [car_price] = expected_prices(model, [{**CAR, **TRAINING_SPELLING}])
    lower_ratio, upper_ratio = interval_ratios(mlflow_registry[0], version)
    estimate = champion_estimate(mlflow_registry, {**CAR, **TRAINING_SPELLING}, car_price)

    # One car, named fields.
    one = httpx.post(f"{bridge_url}/predict", json=CAR, headers={**KEY, "X-Client-Id": "pricing-page"})
    assert one.status_code == 200, one.text
    request_id = one.headers["X-Request-Id"]
    assert one.json() == {
        "request_id": f"{request_id}/0",
        "price_per_day": pytest.approx(car_price, abs=0.006),
        "price_lower": pytest.approx(car_price * lower_ratio, abs=0.02),
        "price_upper": pytest.approx(car_price * upper_ratio, abs=0.02),
        "estimated_error": pytest.approx(estimate, abs=0.011),  # the error the version's estimator expects
        "model_name": "rentalstream-price",
        "model_version": version,
        "unknown_fields": [],
    }
    assert lower_ratio < 1 < upper_ratio

    # The same car in the original Getaround API's positional form.
    positional = httpx.post(f"{bridge_url}/predict", json={"input": [[CAR[n] for n in POSITIONAL_ORDER]]}, headers=KEY)
    assert positional.status_code == 200, positional.text
    assert positional.json() == {"prediction": [pytest.approx(car_price, abs=0.006)]}

    # A list: answers in order, the unknown brand reported.
    tesla = {**SAMPLE_CAR, "model_key": "Tesla", "fuel": "electro"}
    listed = httpx.post(f"{bridge_url}/predict", json=[CAR, tesla, SAMPLE_CAR], headers=KEY)
    assert listed.status_code == 200, listed.text
    answers = listed.json()
    assert [a["price_per_day"] for a in answers] == pytest.approx(
        expected_prices(model, [{**CAR, **TRAINING_SPELLING}, tesla, SAMPLE_CAR]), abs=0.006
    )
    assert [a["unknown_fields"] for a in answers] == [[], ["model_key"], []]
    assert [a["request_id"] for a in answers] == [f"{listed.headers['X-Request-Id']}/{i}" for i in range(3)]

    # 200 callers at once, each with its own car: everyone gets their own answer.
    cars = [{**SAMPLE_CAR, "mileage": 2_000 + 1_500 * i, "engine_power": 60 + i} for i in range(200)]

    async def ask_all():
        async with httpx.AsyncClient(base_url=bridge_url, headers=KEY, timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict", json=car) for car in cars))

    replies = asyncio.run(ask_all())
    assert [r.status_code for r in replies] == [200] * 200
    assert [r.json()["request_id"] for r in replies] == [f"{r.headers['X-Request-Id']}/0" for r in replies]
    assert len({r.headers["X-Request-Id"] for r in replies}) == 200
    assert [r.json()["price_per_day"] for r in replies] == pytest.approx(expected_prices(model, cars), abs=0.006)

    # The request log: who asked what, what was answered, by which model, how long it took.
    engine = create_engine(normalised_database_url(clean_database))
    with engine.connect() as conn:
        logged = conn.execute(
            text("""
            SELECT r.client, r.car ->> 'model_key' AS brand, (r.car ->> 'mileage')::int AS mileage,
                   p.price_per_day, p.price_lower, p.price_upper, p.model_version, p.scored_at - r.requested_at AS took
            FROM price_requests r JOIN prices p ON p.price_id = r.request_id
            WHERE r.request_id = :id
        """),
            {"id": f"{request_id}/0"},
        ).one()
        stored = conn.execute(text("SELECT count(*) FROM price_requests")).scalar_one()
    engine.dispose()
    assert (logged.client, logged.brand, logged.mileage) == ("pricing-page", "Citroën", 140411)
    assert (logged.price_per_day, logged.model_version) == (pytest.approx(car_price, abs=0.006), version)
    assert (logged.price_lower, logged.price_upper) == (one.json()["price_lower"], one.json()["price_upper"])
    assert 0 <= logged.took.total_seconds() < 2
    assert stored >= 1 + 1 + 3 + 200  # and the warm-up

    # Refusals, answered by the bridge itself.
    assert httpx.post(f"{bridge_url}/predict", json=CAR).status_code == 401
    assert httpx.post(f"{bridge_url}/predict", json=CAR, headers={"X-API-Key": "wrong"}).status_code == 401
    bad_fuel = httpx.post(f"{bridge_url}/predict", json={**CAR, "fuel": "steam"}, headers=KEY)
    assert bad_fuel.status_code == 422
    [error] = bad_fuel.json()["detail"]
    assert error["loc"] == ["body", "car", "fuel"] and "unknown fuel 'steam'" in error["msg"]
    too_many = httpx.post(f"{bridge_url}/predict", json=[SAMPLE_CAR] * 6, headers=KEY)
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["body", "cars"]
    too_many_rows = httpx.post(
        f"{bridge_url}/predict", json={"input": [[CAR[n] for n in POSITIONAL_ORDER]] * 6}, headers=KEY
    )
    assert too_many_rows.status_code == 422 and too_many_rows.json()["detail"][0]["loc"] == [
        "body",
        "positional",
        "input",
    ]
    too_big = httpx.post(f"{bridge_url}/predict", json=[{**CAR, "model_key": "x" * 60}] * 60, headers=KEY)
    assert len(too_big.request.content) > 4096 and too_big.status_code == 413

    assert metric(bridge_url, "rentalstream_bridge_pending_replies") == 0
    # No task left behind. A connection's task ends once the server reads the client's
    # close, which may come a moment after the answer (the 413 keeps its connection open).
    # At most as many as before, not exactly: a task of the bridge's own (a Kafka client's
    # metadata refresh, say) running when the count was taken may have ended since. The
    # wait ends as soon as the count is down; its bound only has to outlast a loaded machine.
    wait_for(
        lambda: metric(bridge_url, "rentalstream_bridge_asyncio_tasks") <= tasks_before,
        60,
        "the bridge's asyncio tasks to come back to their count before the requests",
    )
    ready = httpx.get(f"{bridge_url}/ready").json()
    assert ready["ready"] and ready["champion_version"] == version


def test_explain_true_says_why_each_price_to_the_cent_and_a_stored_price_is_explained_alike(
    scorer_process, bridge_url, bridge_env, mlflow_registry
):
    version, model = champion(mlflow_registry)
    warm_up(bridge_url)
    tesla = {**SAMPLE_CAR, "model_key": "Tesla", "fuel": "electro"}
    asked = [{**CAR, **TRAINING_SPELLING}, tesla]
    frame = build_features([{**dict.fromkeys(EQUIPMENT, False), **car} for car in asked])
    exact = model.booster_.predict(frame, pred_contrib=True)  # LightGBM's own, through pandas

    # The scorer's first explanation reads its booster (~0.25 s): well inside the 2-s timeout.
    explained = httpx.post(f"{bridge_url}/predict?explain=true", json=[CAR, tesla], headers=KEY)
    assert explained.status_code == 200, explained.text
    answers = explained.json()
    for answer, row in zip(answers, exact, strict=True):
        explanation = answer["explanation"]
        contributions = {c["feature"]: c["euros"] for c in explanation["contributions"]}
        cents = round(explanation["base_value"] * 100) + sum(round(e * 100) for e in contributions.values())
        assert cents == round(answer["price_per_day"] * 100)
        assert (explanation["price_per_day"], explanation["model_version"]) == (answer["price_per_day"], version)
        assert explanation["base_value"] == pytest.approx(row[-1], abs=0.01)
        assert [contributions[name] for name in frame.columns] == pytest.approx(list(row[:-1]), abs=0.01)
    values = {c["feature"]: c["value"] for c in answers[0]["explanation"]["contributions"]}
    assert values["model_key"] == "Citroën" and values["mileage"] == CAR["mileage"]

    positional = httpx.post(
        f"{bridge_url}/predict?explain=true", json={"input": [[CAR[n] for n in POSITIONAL_ORDER]]}, headers=KEY
    )
    assert positional.status_code == 200, positional.text
    assert positional.json()["explanations"] == [answers[0]["explanation"]]
    assert positional.json()["prediction"] == [answers[0]["price_per_day"]]

    # The stored price, explained afterwards by `rentalstream explain`, says the same.
    printed = cli(bridge_env, "explain", answers[1]["request_id"])
    assert f"costs {answers[1]['price_per_day']:.2f} € a day (v{version})" in printed
    for contribution in answers[1]["explanation"]["contributions"]:
        euros = re.escape(format(contribution["euros"], "+.2f"))
        assert re.search(rf"{contribution['feature']}\s+.*\s{euros}\b", printed), printed
    refused = run_cli(bridge_env, "explain", "rental-999999")
    assert refused.returncode == 2 and "no price 'rental-999999'" in refused.stdout


def test_no_reply_is_a_504_a_late_reply_reaches_nobody_and_no_broker_is_a_503(
    scorer_process, scorer_env, kafka_broker, bridge_url, mlflow_registry, tmp_path
):
    _, model = champion(mlflow_registry)
    timed_out = warm_up(bridge_url)
    # The warm-up requests that timed out while the scorer joined its group get their
    # replies late, each counted once.
    late_before = timed_out
    wait_for(
        lambda: metric(bridge_url, "rentalstream_bridge_late_replies_total") == late_before,
        60,
        f"the {timed_out} timed-out warm-up requests to be answered late",
    )
    tasks_before = metric(bridge_url, "rentalstream_bridge_asyncio_tasks")

    scorer_process.terminate()
    scorer_process.wait(30)
    started = time.monotonic()
    unanswered = httpx.post(f"{bridge_url}/predict", json=CAR, headers=KEY, timeout=10)
    took = time.monotonic() - started
    assert unanswered.status_code == 504, unanswered.text
    assert unanswered.json()["request_id"] == unanswered.headers["X-Request-Id"]
    assert took >= 2  # the bridge waited its configured 2 s, then answered (before the client's 10 s)
    assert metric(bridge_url, "rentalstream_bridge_pending_replies") == 0
    assert metric(bridge_url, "rentalstream_bridge_late_replies_total") == late_before

    # A new scorer answers the abandoned request: the bridge drops that reply and counts it,
    # and a new caller gets the answer to its own request.
    with service_process("scorer", scorer_env, tmp_path / "scorer-again.log") as again:
        wait_for(
            lambda: metric(bridge_url, "rentalstream_bridge_late_replies_total") == late_before + 1,
            90,
            "the late reply to be dropped",
            again,
            tmp_path / "scorer-again.log",
        )
        other = {**SAMPLE_CAR, "mileage": 3_000}
        fresh = httpx.post(f"{bridge_url}/predict", json=other, headers=KEY, timeout=10)
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["request_id"] == f"{fresh.headers['X-Request-Id']}/0"
        assert fresh.json()["price_per_day"] == pytest.approx(expected_prices(model, [other])[0], abs=0.006)

        # Without a broker: 503 within the timeout, and /ready says why.
        kafka_broker.stop()
        refused = httpx.post(f"{bridge_url}/predict", json=CAR, headers=KEY, timeout=10)
        assert refused.status_code == 503, refused.text  # the bridge's answer, before the client's 10 s
        ready = httpx.get(f"{bridge_url}/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["broker"] is False

    assert metric(bridge_url, "rentalstream_bridge_pending_replies") == 0
    # Not one more task than before (aiokafka may have one fewer once the broker is gone).
    assert metric(bridge_url, "rentalstream_bridge_asyncio_tasks") <= tasks_before
