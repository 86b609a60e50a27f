"""Validation of each record against its contract, and the dead letter of every record that
fails it (topic, partition, offset, raw bytes and the reason)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from runtime.kafka.subscriber import KafkaRecord
from schemas.events import MAX_MESSAGE_BYTES, DeadLetter, utc_now
from schemas.text import sanitised
from schemas.topics import DEAD_LETTERS

Event = TypeVar("Event", bound=BaseModel)


@dataclass
class Parsed(Generic[Event]):
    events: list[tuple[KafkaRecord, Event]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def parse_records(records: Sequence[KafkaRecord], contract: type[Event], consumer: str) -> Parsed[Event]:
    """Validate every record against ``contract``; failures become dead letters."""
    parsed: Parsed[Event] = Parsed()
    for record in records:
        size = len(record.value or b"")
        if size > MAX_MESSAGE_BYTES:
            reason = f"message of {size:,} bytes is over the {MAX_MESSAGE_BYTES:,}-byte limit of a {contract.__name__}"
            parsed.dead_letters.append(dead_letter(record, reason, consumer))
            continue
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
        # Text from outside, stored as text: PostgreSQL refuses a NUL in it (a field name in
        # the reason comes from the message), and one refused letter would fail its batch.
        key=sanitised(record.key.decode("utf-8", "replace")) if record.key is not None else None,
        raw_value=record.value or b"",
        raw_size=len(record.value or b""),
        reason=sanitised(reason),
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


def dead_letter_messages(dead_letters: Sequence[DeadLetter]) -> list[tuple[str, str | None, DeadLetter]]:
    """The (topic, key, letter) messages of ``dead_letters`` for ``BatchPublisher.publish``: on the
    topic a letter carries at most the first 64 kB of its message (``DeadLetter.on_topic``)."""
    return [(DEAD_LETTERS.name, d.key, d.on_topic()) for d in dead_letters]
