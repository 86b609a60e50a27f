"""The scorer's handlers through FastStream's TestKafkaBroker: no Kafka, but the real
PostgreSQL and the session's MLflow registry. The whole flow on a real broker is in
tests/e2e; these say, in a second, what one batch becomes."""

import asyncio
import json
import shutil

import mlflow
import pandas as pd
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from mlflow import MlflowClient

from runtime.settings import Settings
from schemas.predict import EXAMPLE_CAR
from schemas.topics import DEAD_LETTERS, DELAYS, PRICE_REQUESTS, PRICES, RENTALS
from scorer.app import Scorer
from scorer.metrics import ScorerMetrics
from scorer.reply_topics import ReplyTopics
from tests.handlers.in_memory import ThroughTheTestBroker, collect
from tests.helpers import (
    champion,
    champion_estimate,
    query,
    reference_prices,
    register_small_model,
    registry_copy,
)
from training.features import build_features, read_pricing

pytestmark = pytest.mark.integration
MODEL = "rentalstream-price"


class KnownReplyTopics(ReplyTopics):
    """The scorer's own reply-topic rule, over a listing of the broker's topics given here."""

    def __init__(self, *names: str) -> None:
        super().__init__(bootstrap="127.0.0.1:9")
        self.names = set(names)

    async def _list_topics(self) -> set[str]:
        return self.names


def rental(rental_id: int, **fields) -> bytes:
    event = {
        "rental_id": rental_id,
        "car_id": 7,
        "checkin_type": "connect",
        "state": "ended",
        "car": EXAMPLE_CAR,
        **fields,
    }
    return json.dumps(event).encode()


def run_scorer(settings: Settings, publish, *, reply_topics=None) -> dict[str, list[dict]]:
    """Start a Scorer on a TestKafkaBroker, ``publish(broker, scorer)`` through it (the
    scorer for a test that reaches into it), and collect what the scorer published, per
    topic."""
    broker = KafkaBroker()
    published = collect(broker, PRICES.name, DELAYS.name, DEAD_LETTERS.name, "my-replies")

    async def scenario() -> None:
        scorer = Scorer(
            settings,
            ScorerMetrics(),
            results={name: ThroughTheTestBroker(broker) for name in (RENTALS.name, PRICE_REQUESTS.name)},
            reply_topics=reply_topics or KnownReplyTopics(),
        )
        scorer.subscribe(broker)
        async with TestKafkaBroker(broker):
            await scorer.start()
            try:
                await publish(broker, scorer)
            finally:
                await scorer.stop()

    asyncio.run(scenario())
    return published


@pytest.fixture
def settings(clean_database, mlflow_registry) -> Settings:
    return Settings(
        kafka={"bootstrap": "127.0.0.1:9"},  # never dialled: the test broker and the results above stand in
        database={"url": clean_database},
        registry={"tracking_uri": mlflow_registry[0]},
        scorer={"compile_model": False},
        _env_file=None,
    )


def champion_price(mlflow_registry, car: dict) -> float:
    mlflow.set_tracking_uri(mlflow_registry[0])
    model = mlflow.lightgbm.load_model(f"models:/{MODEL}/{mlflow_registry[1].champion_version}")
    return round(float(reference_prices(model, pd.DataFrame([car]))[0]), 2)


def test_a_rental_batch_is_priced_its_delays_worked_out_and_a_bad_record_dead_lettered(
    settings, clean_database, mlflow_registry
):
    async def publish(broker, scorer):
        await broker.publish_batch(
            rental(1, delay_at_checkout_minutes=90),
            rental(2, delay_at_checkout_minutes=-5, previous_ended_rental_id=1, planned_gap_minutes=60),
            b'{"rental_id": "not a number"}',
            topic=RENTALS.name,
        )

    published = run_scorer(settings, publish)

    price = champion_price(mlflow_registry, EXAMPLE_CAR)
    prices = {p["price_id"]: p for p in published[PRICES.name]}
    assert set(prices) == {"rental-1", "rental-2"}
    assert all(p["price_per_day"] == pytest.approx(price, abs=0.01) for p in prices.values())
    assert {p["model_version"] for p in prices.values()} == {mlflow_registry[1].champion_version}
    # Each price carries the error its version's estimator expects of it.
    estimate = champion_estimate(mlflow_registry, EXAMPLE_CAR, prices["rental-1"]["price_per_day"])
    assert [p["estimated_error"] for p in prices.values()] == pytest.approx([estimate, estimate], abs=0.011)
    assert all(p["challenger_estimated_error"] is None for p in prices.values())

    # Rental 1 came back 90 minutes late; rental 2 was planned 60 minutes after it: its
    # driver waited 30 minutes.
    second = next(d for d in published[DELAYS.name] if d["rental_id"] == 2)
    assert (second["previous_delay_minutes"], second["waiting_minutes"], second["is_conflict"]) == (90, 30, True)

    [letter] = published[DEAD_LETTERS.name]
    assert letter["topic"] == RENTALS.name and letter["reason"].startswith("invalid RentalEvent: rental_id")

    stored = query(clean_database, "SELECT price_id, price_per_day, estimated_error FROM prices ORDER BY price_id")
    assert list(stored.price_id) == ["rental-1", "rental-2"]
    assert list(stored.price_per_day) == pytest.approx([price, price], abs=0.01)
    assert list(stored.estimated_error) == [prices[i]["estimated_error"] for i in ("rental-1", "rental-2")]
    assert query(clean_database, "SELECT is_conflict FROM delays WHERE rental_id = 2").is_conflict[0]
    assert query(clean_database, "SELECT count(*) AS n FROM dead_letters").n[0] == 1


def test_a_batch_fetched_before_a_rebalance_began_is_left_unscored_and_the_next_one_is_scored(
    settings, clean_database, mlflow_registry
):
    """The scorer's handler leaves a batch its rebalance listener calls outdated (fetched
    before a rebalance began): nothing stored, nothing published, for whoever holds its
    partitions after the rebalance to consume again. The in-memory broker hands batches
    straight to the handler, so the test plays the subscriber's part: a rebalance begins
    (``on_partitions_revoked``), then a batch is handed over unfetched, then one fetched."""
    stored = []

    async def publish(broker, scorer):
        watch = scorer.rebalances[RENTALS.name]
        await watch.on_partitions_revoked(set())  # counted; the scorer's listener finds no batch in hand
        await broker.publish_batch(rental(1), topic=RENTALS.name)
        stored.append(len(query(clean_database, "SELECT rental_id FROM rentals")))
        watch.batch_fetched()  # what the subscriber does when getmany returns a batch
        await broker.publish_batch(rental(2), topic=RENTALS.name)

    published = run_scorer(settings, publish)

    assert stored == [0]  # the outdated batch: nothing stored
    assert [p["price_id"] for p in published[PRICES.name]] == ["rental-2"]
    assert list(query(clean_database, "SELECT rental_id FROM rentals").rental_id) == [2]


def test_a_price_request_is_answered_on_its_reply_topic_and_one_naming_a_catalogue_topic_refused(
    settings, clean_database, mlflow_registry
):
    def request(request_id: str, reply_to: str) -> bytes:
        return json.dumps({"request_id": request_id, "car": EXAMPLE_CAR, "reply_to": reply_to}).encode()

    async def publish(broker, scorer):
        await broker.publish(request("r-1", "my-replies"), PRICE_REQUESTS.name)
        await broker.publish(request("r-2", RENTALS.name), PRICE_REQUESTS.name)

    published = run_scorer(settings, publish, reply_topics=KnownReplyTopics("my-replies", RENTALS.name))

    [reply] = published["my-replies"]
    assert reply["request_id"] == "r-1"
    assert reply["price_per_day"] == pytest.approx(champion_price(mlflow_registry, EXAMPLE_CAR), abs=0.01)
    assert [p["price_id"] for p in published[PRICES.name]] == ["r-1"]
    [letter] = published[DEAD_LETTERS.name]
    assert (
        letter["reason"]
        == f"reply_to: no topic {RENTALS.name!r} to reply on (it must exist and not be a catalogue topic)"
    )
    assert list(query(clean_database, "SELECT request_id FROM price_requests").request_id) == ["r-1"]


def test_a_request_asking_why_gets_its_prices_explanation_and_the_others_none(
    settings, clean_database, mlflow_registry
):
    def request(request_id: str, **fields) -> bytes:
        return json.dumps({"request_id": request_id, "car": EXAMPLE_CAR, "reply_to": "my-replies", **fields}).encode()

    async def publish(broker, scorer):
        await broker.publish_batch(request("plain"), request("why", explain=True), topic=PRICE_REQUESTS.name)

    published = run_scorer(settings, publish, reply_topics=KnownReplyTopics("my-replies"))

    replies = {r["request_id"]: r for r in published["my-replies"]}
    assert replies["plain"]["explanation"] is None
    explanation = replies["why"]["explanation"]
    mlflow.set_tracking_uri(mlflow_registry[0])
    booster = mlflow.lightgbm.load_model(f"models:/{MODEL}/{mlflow_registry[1].champion_version}").booster_
    exact = booster.predict(build_features([EXAMPLE_CAR]), pred_contrib=True)[0]  # LightGBM's own, through pandas
    assert explanation["base_value"] == pytest.approx(exact[-1], abs=0.01)
    by_feature = {c["feature"]: c["euros"] for c in explanation["contributions"]}
    assert [by_feature[f] for f in build_features([EXAMPLE_CAR]).columns] == pytest.approx(list(exact[:-1]), abs=0.01)
    cents = round(explanation["base_value"] * 100) + sum(round(e * 100) for e in by_feature.values())
    assert cents == round(replies["why"]["price_per_day"] * 100)
    # The prices topic carries the same answers; the stored prices are the same for both.
    assert {p["price_id"]: p["explanation"] is not None for p in published[PRICES.name]} == {
        "plain": False,
        "why": True,
    }
    stored = query(clean_database, "SELECT price_id, price_per_day FROM prices ORDER BY price_id")
    assert list(stored.price_per_day) == [replies["plain"]["price_per_day"], replies["why"]["price_per_day"]]


def test_a_request_in_the_live_split_is_answered_and_explained_by_the_challenger(
    settings, clean_database, mlflow_registry, pricing_csv, tmp_path
):
    """With a challenger set, a request asking for the challenger's answer gets its price,
    its version and its explanation; the champion's request, the champion's. Both prices
    are on both."""
    uri = registry_copy(mlflow_registry, tmp_path)
    small_version, small = register_small_model(uri, read_pricing(pricing_csv), "small", trees=40)
    MlflowClient(tracking_uri=uri).set_registered_model_alias(MODEL, "challenger", small_version)
    challenged = settings.model_copy(
        update={
            "registry": settings.registry.model_copy(update={"tracking_uri": uri}),
            "scorer": settings.scorer.model_copy(update={"model_cache_dir": tmp_path / "cache"}),
        }
    )

    def request(request_id: str, **fields) -> bytes:
        body = {"request_id": request_id, "car": EXAMPLE_CAR, "reply_to": "my-replies", "explain": True, **fields}
        return json.dumps(body).encode()

    async def publish(broker, scorer):
        await broker.publish_batch(
            request("champ"), request("chall", answer_with="challenger"), topic=PRICE_REQUESTS.name
        )

    published = run_scorer(challenged, publish, reply_topics=KnownReplyTopics("my-replies"))

    replies = {r["request_id"]: r for r in published["my-replies"]}
    champion_version = mlflow_registry[1].champion_version
    for reply in replies.values():
        assert (reply["model_version"], reply["challenger_model_version"]) == (champion_version, small_version)
        assert reply["price_per_day"] == pytest.approx(champion_price(mlflow_registry, EXAMPLE_CAR), abs=0.01)
        small_price = reference_prices(small, pd.DataFrame([EXAMPLE_CAR]))[0]
        assert reply["challenger_price_per_day"] == pytest.approx(small_price, abs=0.01)
    assert replies["champ"]["answered_with_version"] == champion_version
    assert replies["chall"]["answered_with_version"] == small_version
    # The champion's estimator estimates its price; the small version has none.
    for reply in replies.values():
        expected = champion_estimate(mlflow_registry, EXAMPLE_CAR, reply["price_per_day"])
        assert reply["estimated_error"] == pytest.approx(expected, abs=0.011)
        assert reply["challenger_estimated_error"] is None
    # Each explanation is of the price its requester gets: LightGBM's own contributions.
    for request_id, model, price in (
        ("champ", champion(mlflow_registry)[1], replies["champ"]["price_per_day"]),
        ("chall", small, replies["chall"]["challenger_price_per_day"]),
    ):
        explanation = replies[request_id]["explanation"]
        exact = model.booster_.predict(build_features([EXAMPLE_CAR]), pred_contrib=True)[0]
        assert explanation["base_value"] == pytest.approx(exact[-1], abs=0.01), request_id
        cents = round(explanation["base_value"] * 100) + sum(
            round(c["euros"] * 100) for c in explanation["contributions"]
        )
        assert cents == round(price * 100), request_id
    stored = query(clean_database, "SELECT price_id, answered_with_version FROM prices ORDER BY price_id")
    assert list(stored.answered_with_version) == [small_version, champion_version]


def test_a_restarted_scorer_prices_with_the_champion_it_served_last_while_the_registry_cannot_answer(
    settings, clean_database, mlflow_registry, tmp_path
):
    """What a scorer served is noted in the model cache. Its successor prices with that
    version at once, and keeps doing so when the registry cannot be read at all."""
    registry_copy = tmp_path / "mlflow.db"
    shutil.copy(mlflow_registry[0].removeprefix("sqlite:///"), registry_copy)
    served = settings.model_copy(
        update={
            "registry": settings.registry.model_copy(update={"tracking_uri": f"sqlite:///{registry_copy}"}),
            "scorer": settings.scorer.model_copy(update={"model_cache_dir": tmp_path / "cache"}),
        }
    )

    def publish(rental_id: int):
        async def one_rental(broker, scorer):
            await broker.publish(rental(rental_id), topic=RENTALS.name)

        return one_rental

    first = run_scorer(served, publish(1))
    registry_copy.write_bytes(b"this is not a database")  # from now on every registry question fails
    second = run_scorer(served, publish(2))

    price = champion_price(mlflow_registry, EXAMPLE_CAR)
    for published, rental_id in ((first, 1), (second, 2)):
        [priced] = published[PRICES.name]
        assert priced["price_id"] == f"rental-{rental_id}"
        assert priced["model_version"] == mlflow_registry[1].champion_version
        assert priced["price_per_day"] == pytest.approx(price, abs=0.01)
    assert list(query(clean_database, "SELECT price_id FROM prices ORDER BY price_id").price_id) == [
        "rental-1",
        "rental-2",
    ]
