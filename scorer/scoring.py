"""Turn a batch of Kafka records into results: valid events priced, bad ones dead-lettered.

Pure functions over records and a price model; no broker and no database here, so
the whole scoring logic is unit-testable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.cars import CarFeatures
from schemas.events import DeadLetter, PriceScored, utc_now

log = logging.getLogger(__name__)

Event = TypeVar("Event", bound=BaseModel)


class KafkaRecord(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class CarEvent(Protocol):
    car: CarFeatures


class Pricer(Protocol):
    name: str
    version: str

    def price_per_day(self, cars: Sequence[CarFeatures]) -> list[float]: ...


@dataclass
class Parsed(Generic[Event]):
    events: list[tuple[KafkaRecord, Event]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def score_batch(
    records: Sequence[KafkaRecord], contract: type[Event], model: Pricer, consumer: str
) -> tuple[list[tuple[KafkaRecord, Event, float]], list[DeadLetter]]:
    """Validate and price a batch: (record, event, price per day) for every event
    priced, and a dead letter for every record that could not be."""
    parsed = parse_records(records, contract, consumer)
    prices, failed = price_events(parsed.events, model, consumer)
    priced = [(r, e, p) for (r, e), p in zip(parsed.events, prices, strict=True) if p is not None]
    return priced, parsed.dead_letters + failed


def parse_records(
    records: Sequence[KafkaRecord], contract: type[Event], consumer: str
) -> Parsed[Event]:
    """Validate every record against ``contract``; failures become dead letters."""
    parsed: Parsed[Event] = Parsed()
    for record in records:
        try:
            event = contract.model_validate_json(record.value or b"")
        except ValidationError as error:
            parsed.dead_letters.append(dead_letter(record, validation_reason(error), consumer))
        else:
            parsed.events.append((record, event))
    return parsed


def price_events(
    events: Sequence[tuple[KafkaRecord, CarEvent]], model: Pricer, consumer: str
) -> tuple[list[float | None], list[DeadLetter]]:
    """Price all cars in one call; if that fails, price one by one to isolate the bad ones."""
    cars = [event.car for _, event in events]
    # The model is third-party code: whatever it raises must dead-letter the event
    # that caused it, never stop the consumer.
    try:
        return list(model.price_per_day(cars)), []
    except Exception:
        log.exception("batch pricing failed; isolating the failing events")
    prices: list[float | None] = []
    dead: list[DeadLetter] = []
    for (record, _), car in zip(events, cars, strict=True):
        try:
            prices.append(model.price_per_day([car])[0])
        except Exception as error:  # noqa: BLE001
            prices.append(None)
            dead.append(dead_letter(record, f"scoring failed: {error!r}", consumer))
    return prices, dead


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
) -> PriceScored:
    return PriceScored(
        price_id=price_id,
        rental_id=rental_id,
        request_id=request_id,
        car_id=car_id,
        price_per_day=price,
        unknown_fields=car.unknown_fields,
        model_name=model.name,
        model_version=model.version,
        event_time=event_time,
        scored_at=scored_at,
    )


def dead_letter(record: KafkaRecord, reason: str, consumer: str) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=f"{record.topic}/{record.partition}/{record.offset}",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", "replace") if record.key is not None else None,
        raw_value=record.value or b"",
        reason=reason,
        consumer=consumer,
        received_at=utc_now(),
    )


def validation_reason(error: ValidationError, limit: int = 5) -> str:
    """A short, readable reason: the failing fields and why (not the whole payload)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - limit
    return "invalid " + error.title + ": " + "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
