"""Turn a batch of Kafka records into results: valid events priced, bad ones dead-lettered.

Pure functions over records and a price model; no broker and no database here, so
the whole scoring logic is unit-testable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from runtime.kafka.dead_letters import Event, dead_letter, parse_records
from runtime.kafka.subscriber import KafkaRecord
from schemas.cars import CarFeatures
from schemas.events import Arm, DeadLetter, PriceRequest, PriceScored
from schemas.explanations import Explanation
from schemas.intervals import PriceInterval

log = logging.getLogger(__name__)


class CarEvent(Protocol):
    car: CarFeatures


class Pricer(Protocol):
    name: str
    version: str
    interval: PriceInterval | None

    def price_per_day(self, cars: Sequence[CarFeatures]) -> list[float]: ...

    def estimate_errors(self, cars: Sequence[CarFeatures], prices: Sequence[float]) -> list[float] | None: ...

    def explain(self, cars: Sequence[CarFeatures], prices: Sequence[float]) -> list[Explanation]: ...


def score_batch(
    records: Sequence[KafkaRecord], contract: type[Event], model: Pricer, consumer: str
) -> tuple[list[tuple[KafkaRecord, Event, float]], list[DeadLetter]]:
    """Validate and price a batch: (record, event, price per day) for every event
    priced, and a dead letter for every record that could not be."""
    parsed = parse_records(records, contract, consumer)
    prices, failed = price_events(parsed.events, model, consumer)
    priced = [(r, e, p) for (r, e), p in zip(parsed.events, prices, strict=True) if p is not None]
    return priced, parsed.dead_letters + failed


def refuse_replies(
    priced: Sequence[tuple[KafkaRecord, PriceRequest, float]], allowed: set[str], consumer: str
) -> tuple[list[tuple[KafkaRecord, PriceRequest, float]], list[DeadLetter]]:
    """Keep the requests without a reply topic or with one in ``allowed``; dead-letter the
    others, naming the field, since their answer could never be delivered as asked."""
    kept, dead = [], []
    for record, request, price in priced:
        if request.reply_to is None or request.reply_to in allowed:
            kept.append((record, request, price))
        else:
            reason = f"reply_to: no topic {request.reply_to!r} to reply on (it must exist and not be a catalogue topic)"
            dead.append(dead_letter(record, reason, consumer))
    return kept, dead


def price_events(
    events: Sequence[tuple[KafkaRecord, CarEvent]], model: Pricer, consumer: str
) -> tuple[list[float | None], list[DeadLetter]]:
    """Price every event's car; an event whose car the model fails on is dead-lettered."""
    outcomes = price_each(model, [event.car for _, event in events])
    dead = [
        dead_letter(record, f"scoring failed: {outcome!r}", consumer)
        for (record, _), outcome in zip(events, outcomes, strict=True)
        if isinstance(outcome, Exception)
    ]
    return [None if isinstance(o, Exception) else o for o in outcomes], dead


def challenger_prices(challenger: Pricer, cars: Sequence[CarFeatures]) -> list[float | None]:
    """The challenger's price of every car, None where it fails: a challenger under
    trial must never dead-letter an event the champion priced."""
    return [None if isinstance(o, Exception) else o for o in price_each(challenger, cars)]


def estimated_errors(
    model: Pricer | None, cars: Sequence[CarFeatures], prices: Sequence[float | None]
) -> list[float | None]:
    """``model``'s estimated absolute error of each price (None where there is no price,
    or the version has no error estimator, or the estimator fails: an estimate is never
    worth dead-lettering an event the model priced)."""
    if model is None:
        return [None] * len(prices)
    known = [i for i, price in enumerate(prices) if price is not None]
    estimates: list[float | None] = [None] * len(prices)
    try:
        estimated = model.estimate_errors([cars[i] for i in known], [prices[i] for i in known])
    except Exception:
        log.exception("%s v%s could not estimate the errors of %d prices", model.name, model.version, len(known))
        return estimates
    for i, estimate in zip(known, estimated or [None] * len(known), strict=True):
        estimates[i] = estimate
    return estimates


def price_each(model: Pricer, cars: Sequence[CarFeatures]) -> list[float | Exception]:
    """Each car's price, or what the model raised on it: all cars in one call, and car
    by car only if that call fails, to isolate the bad ones. The model is third-party
    code, so whatever it raises stays with the car that caused it and never stops the
    consumer."""
    try:
        return list(model.price_per_day(cars))
    except Exception:
        log.exception("%s v%s failed on a batch; pricing car by car", model.name, model.version)
    outcomes: list[float | Exception] = []
    for car in cars:
        try:
            outcomes.append(model.price_per_day([car])[0])
        except Exception as error:  # noqa: BLE001
            outcomes.append(error)
    return outcomes


def price_scored(
    *,
    price_id: str,
    price: float,
    car: CarFeatures,
    model: Pricer,
    event_time: datetime,
    scored_at: datetime,
    rental_id: int | None = None,
    request_id: str | None = None,
    car_id: int | None = None,
    listed_price_per_day: float | None = None,
    challenger: Pricer | None = None,
    challenger_price: float | None = None,
    answer_with: Arm | None = None,
    estimated_error: float | None = None,
    challenger_estimated_error: float | None = None,
) -> PriceScored:
    """The price of one event; ``answer_with``: for a price request, whose price its
    requester asked to be answered with (the challenger's only when it priced the car);
    the estimated errors: ``estimated_errors`` of each version's price."""
    lower, upper = model.interval.around(price) if model.interval else (None, None)
    challenger_lower = challenger_upper = None
    if challenger is not None and challenger.interval and challenger_price is not None:
        challenger_lower, challenger_upper = challenger.interval.around(challenger_price)
    answered_with = None
    if answer_with == "challenger" and challenger is not None and challenger_price is not None:
        answered_with = challenger.version
    elif answer_with is not None:
        answered_with = model.version
    return PriceScored(
        price_id=price_id,
        rental_id=rental_id,
        request_id=request_id,
        car_id=car_id,
        price_per_day=price,
        listed_price_per_day=listed_price_per_day,
        unknown_fields=car.unknown_fields,
        price_lower=lower,
        price_upper=upper,
        estimated_error=estimated_error,
        model_name=model.name,
        model_version=model.version,
        challenger_model_version=challenger.version if challenger else None,
        challenger_price_per_day=challenger_price,
        challenger_price_lower=challenger_lower,
        challenger_price_upper=challenger_upper,
        challenger_estimated_error=challenger_estimated_error,
        answered_with_version=answered_with,
        event_time=event_time,
        scored_at=scored_at,
    )
