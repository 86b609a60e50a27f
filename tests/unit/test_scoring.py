"""Pure unit tests of the scoring step, with a stand-in price model."""

import json
from datetime import UTC, datetime
from types import SimpleNamespace

from runtime.kafka.dead_letters import parse_records
from schemas.cars import CarFeatures
from schemas.events import PriceRequest, RentalEvent
from schemas.intervals import PriceInterval
from scorer.scoring import challenger_prices, estimated_errors, price_scored, refuse_replies, score_batch
from tests.helpers import SAMPLE_CAR

CAR = SAMPLE_CAR
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def record(offset, value):
    return SimpleNamespace(topic="rentals", partition=1, offset=offset, key=b"5", value=value)


def rental(rental_id, **change):
    body = {"rental_id": rental_id, "car_id": 5, "checkin_type": "mobile", "state": "ended", "car": CAR}
    return json.dumps({**body, **change}).encode()


class PricePerMileage:
    name, version, interval = "stand-in", "0", None

    def price_per_day(self, cars):
        if any(c.mileage == 666 for c in cars):
            raise ValueError("cursed mileage")
        return [c.mileage / 1000 for c in cars]


def test_valid_records_become_events_and_bad_ones_dead_letters_with_a_reason():
    records = [
        record(0, rental(1)),
        record(1, b"{not json"),
        record(2, rental(2, car={**CAR, "fuel": "kerosene"})),
        record(3, rental(3, checkin_type=None)),
        record(4, None),
        record(5, rental(4)),
    ]
    parsed = parse_records(records, RentalEvent, "scorer")
    assert [e.rental_id for _, e in parsed.events] == [1, 4]
    reasons = {d.offset: d.reason for d in parsed.dead_letters}
    assert set(reasons) == {1, 2, 3, 4}
    assert "json" in reasons[1].lower()
    assert "car.fuel" in reasons[2] and "kerosene" in reasons[2]
    assert "checkin_type" in reasons[3]
    letter = next(d for d in parsed.dead_letters if d.offset == 1)
    assert (letter.topic, letter.partition, letter.raw_value) == ("rentals", 1, b"{not json")
    assert letter.dead_letter_id == "rentals/1/1/scorer"


def test_a_car_the_model_cannot_price_is_isolated_and_the_rest_priced():
    records = [record(0, rental(1)), record(1, rental(2, car={**CAR, "mileage": 666})), record(2, rental(3))]
    priced, dead = score_batch(records, RentalEvent, PricePerMileage(), "scorer")
    assert [(e.rental_id, price) for _, e, price in priced] == [(1, 120.0), (3, 120.0)]
    assert [d.offset for d in dead] == [1] and "cursed mileage" in dead[0].reason


def test_a_challenger_failing_on_a_car_leaves_that_price_empty_and_prices_the_rest():
    cars = [CarFeatures.model_validate({**CAR, "mileage": m}) for m in (2_000, 666, 3_000)]
    assert challenger_prices(PricePerMileage(), cars) == [2.0, None, 3.0]


def test_a_request_whose_reply_could_never_be_delivered_is_dead_lettered_naming_reply_to():
    def request(offset, reply_to):
        body = {"request_id": f"r{offset}", "car": CAR, "reply_to": reply_to}
        return SimpleNamespace(
            topic="price-requests", partition=0, offset=offset, key=b"r", value=json.dumps(body).encode()
        )

    records = [request(0, "price-replies"), request(1, "no-such-topic"), request(2, None), request(3, "mine")]
    priced, _ = score_batch(records, PriceRequest, PricePerMileage(), "scorer")
    kept, dead = refuse_replies(priced, allowed={"price-replies", "mine"}, consumer="scorer")
    assert [r.request_id for _, r, _ in kept] == ["r0", "r2", "r3"]
    assert [d.offset for d in dead] == [1]
    assert dead[0].reason.startswith("reply_to:") and "no-such-topic" in dead[0].reason


def test_no_reply_may_go_to_a_topic_of_the_catalogue_but_price_replies():
    from scorer.reply_topics import NOT_REPLY_TOPICS

    assert NOT_REPLY_TOPICS == {"rentals", "price-requests", "prices", "delays", "drift", "dead-letters"}


def test_every_dead_letter_of_a_batch_names_the_consumer_that_wrote_it():
    records = [record(0, b"{not json"), record(1, rental(2, car={**CAR, "mileage": 666}))]
    _, dead = score_batch(records, RentalEvent, PricePerMileage(), "scorer-7")
    assert [d.dead_letter_id for d in dead] == ["rentals/1/0/scorer-7", "rentals/1/1/scorer-7"]
    assert {d.consumer for d in dead} == {"scorer-7"}
    assert dead[1].reason == "scoring failed: ValueError('cursed mileage')"


class CountingPricer(PricePerMileage):
    def __init__(self):
        self.calls = []

    def price_per_day(self, cars):
        self.calls.append(len(cars))
        return super().price_per_day(cars)


def test_a_batch_the_model_takes_whole_is_priced_in_one_call_and_car_by_car_only_after_a_failure():
    cars = [CarFeatures.model_validate({**CAR, "mileage": m}) for m in (2_000, 3_000, 4_000)]
    model = CountingPricer()
    assert challenger_prices(model, cars) == [2.0, 3.0, 4.0] and model.calls == [3]
    model = CountingPricer()
    assert challenger_prices(model, [*cars[:2], cars[0].model_copy(update={"mileage": 666})]) == [2.0, 3.0, None]
    assert model.calls == [3, 1, 1, 1]


class WithInterval(PricePerMileage):
    name, version = "rentalstream-price", "7"
    interval = PriceInterval(coverage=0.8, lower_ratio=0.9, upper_ratio=1.25, fold_coverage=[0.8])


def test_a_price_carries_its_interval_its_versions_and_the_event_it_answers():
    car = CarFeatures.model_validate({**CAR, "model_key": "Trabant"})  # a brand the model never saw
    challenger = SimpleNamespace(version="8", interval=None)
    t0, t1 = datetime(2026, 11, 29, 12, tzinfo=UTC), datetime(2026, 11, 29, 12, 0, 1, tzinfo=UTC)
    scored = price_scored(
        price_id="req-1/0",
        price=100.0,
        car=car,
        model=WithInterval(),
        event_time=t0,
        scored_at=t1,
        request_id="req-1",
        car_id=3,
        listed_price_per_day=95.0,
        challenger=challenger,
        challenger_price=97.5,
    )
    assert scored.model_dump() == {
        "price_id": "req-1/0",
        "rental_id": None,
        "request_id": "req-1",
        "car_id": 3,
        "price_per_day": 100.0,
        "price_lower": 90.0,
        "price_upper": 125.0,
        "listed_price_per_day": 95.0,
        "unknown_fields": ["model_key"],
        "model_name": "rentalstream-price",
        "model_version": "7",
        "challenger_model_version": "8",
        "challenger_price_per_day": 97.5,
        "challenger_price_lower": None,
        "challenger_price_upper": None,
        "challenger_estimated_error": None,
        "estimated_error": None,
        "answered_with_version": None,
        "explanation": None,
        "event_time": t0,
        "scored_at": t1,
    }
    plain = price_scored(
        price_id="rental-5", price=80.0, car=car, model=PricePerMileage(), event_time=t0, scored_at=t1, rental_id=5
    )
    assert (plain.rental_id, plain.price_lower, plain.price_upper, plain.challenger_model_version) == (
        5,
        None,
        None,
        None,
    )
    assert (plain.model_name, plain.model_version) == ("stand-in", "0")


def test_a_request_in_the_live_split_is_answered_with_the_challengers_price_interval_estimate_and_version():
    car = CarFeatures.model_validate(CAR)
    t0 = datetime(2026, 11, 29, 12, tzinfo=UTC)
    challenger = SimpleNamespace(
        version="8", interval=PriceInterval(coverage=0.8, lower_ratio=0.5, upper_ratio=2.0, fold_coverage=[0.8])
    )

    def scored(answer_with, challenger_price=60.0):
        return price_scored(
            price_id="req-1/0",
            price=100.0,
            car=car,
            model=WithInterval(),
            event_time=t0,
            scored_at=t0,
            request_id="req-1",
            challenger=challenger,
            challenger_price=challenger_price,
            answer_with=answer_with,
            estimated_error=9.5,
            challenger_estimated_error=None if challenger_price is None else 7.5,
        )

    split = scored("challenger")
    assert (split.answered_with_version, split.challenger_price_lower, split.challenger_price_upper) == (
        "8",
        30.0,
        120.0,
    )
    assert split.answer() == (60.0, 30.0, 120.0, "8", 7.5)
    # Both prices stay in the message, the champion's first: what the monitor and `compare` read.
    assert (split.model_version, split.price_per_day, split.price_lower) == ("7", 100.0, 90.0)
    # A challenger that failed on the car leaves the champion to answer, and says so.
    failed = scored("challenger", challenger_price=None)
    assert failed.answered_with_version == "7" and failed.answer() == (100.0, 90.0, 125.0, "7", 9.5)
    assert scored("champion").answer() == (100.0, 90.0, 125.0, "7", 9.5)
    assert scored("champion").answered_with_version == "7"


class EstimatingPricer(PricePerMileage):
    """Estimates each price's error as a tenth of it; fails on a car of 999 km."""

    def estimate_errors(self, cars, prices):
        if any(c.mileage == 999 for c in cars):
            raise RuntimeError("the estimator broke")
        return [round(p / 10, 2) for p in prices]


class WithoutEstimator(PricePerMileage):
    def estimate_errors(self, cars, prices):
        return None


def test_each_version_estimates_the_error_of_its_own_prices_and_a_failure_costs_only_the_estimates():
    cars = [CarFeatures.model_validate({**CAR, "mileage": m}) for m in (2_000, 3_000, 4_000)]
    assert estimated_errors(EstimatingPricer(), cars, [20.0, None, 40.0]) == [2.0, None, 4.0]
    assert estimated_errors(None, cars, [20.0, 30.0, 40.0]) == [None, None, None]
    assert estimated_errors(WithoutEstimator(), cars, [20.0, 30.0, 40.0]) == [None, None, None]
    broken = [CarFeatures.model_validate({**CAR, "mileage": 999}), *cars[1:]]
    assert estimated_errors(EstimatingPricer(), broken, [20.0, 30.0, 40.0]) == [None, None, None]
    scored = price_scored(
        price_id="r-1",
        price=20.0,
        car=cars[0],
        model=EstimatingPricer(),
        event_time=NOW,
        scored_at=NOW,
        estimated_error=2.0,
        challenger=EstimatingPricer(),
        challenger_price=30.0,
        challenger_estimated_error=3.0,
    )
    assert (scored.estimated_error, scored.challenger_estimated_error) == (2.0, 3.0)
