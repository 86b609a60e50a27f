"""What every consumer does with Kafka records, whatever it computes from them:
validate each one against its contract, turn each failure into a dead letter (with
topic, partition, offset, raw bytes and the reason), store those letters, and publish
results without awaiting each send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from faststream.kafka import KafkaBroker
from pydantic import BaseModel, ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import tables
from schemas.events import DeadLetter, utc_now

Event = TypeVar("Event", bound=BaseModel)


class KafkaRecord(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Parsed(Generic[Event]):
    events: list[tuple[KafkaRecord, Event]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


async def raw_records(message) -> tuple:
    """A FastStream decoder handing the batch handler the records themselves: validation
    is ours, per record, so each failure can be dead-lettered with its position and bytes."""
    return message.raw_message


def parse_records(records: Sequence[KafkaRecord], contract: type[Event], consumer: str) -> Parsed[Event]:
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


def dead_letter(record: KafkaRecord, reason: str, consumer: str) -> DeadLetter:
    """The dead letter of ``record`` for ``consumer``: its id names both, so two consumers
    of one topic (scorer and monitor read ``rentals``) each keep their own letter."""
    return DeadLetter(
        dead_letter_id=f"{record.topic}/{record.partition}/{record.offset}/{consumer}",
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


async def insert_dead_letters(conn: AsyncConnection, dead_letters: Sequence[DeadLetter]) -> None:
    """Store dead letters in the caller's transaction; a redelivered one is already there."""
    if not dead_letters:
        return
    rows = [{
        "dead_letter_id": d.dead_letter_id, "topic": d.topic, "kafka_partition": d.partition,
        "kafka_offset": d.offset, "message_key": d.key, "raw_value": d.raw_value,
        "reason": d.reason, "consumer": d.consumer, "received_at": d.received_at,
    } for d in dead_letters]  # fmt: skip
    await conn.execute(insert(tables.dead_letters).on_conflict_do_nothing(), rows)


async def publish_all(broker: KafkaBroker, messages: list[tuple[str, str | None, BaseModel]]) -> None:
    """Send everything without awaiting each ack, then wait for all of them at once."""
    pending = []
    for topic, key, value in messages:
        pending.append(
            await broker.publish(
                value.model_dump_json().encode(), topic, key=key.encode() if key else None,
                headers={"content-type": "application/json"}, no_confirm=True,
            )
        )  # fmt: skip
    if pending:
        await asyncio.gather(*pending)
