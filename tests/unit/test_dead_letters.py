"""Oversized messages: refused unread, and their dead letters still fit on the topic."""

from dataclasses import dataclass

from rentalstream.records import parse_records
from schemas.events import MAX_DEAD_LETTER_RAW_BYTES, MAX_MESSAGE_BYTES, DeadLetter, RentalEvent


@dataclass
class Record:
    value: bytes
    topic: str = "rentals"
    partition: int = 1
    offset: int = 42
    key: bytes | None = b"7"


def test_a_message_over_the_limit_is_dead_lettered_whole_with_its_size_in_the_reason():
    huge = b'{"rental_id": 1, "x": "' + b"A" * MAX_MESSAGE_BYTES + b'"}'
    parsed = parse_records([Record(huge)], RentalEvent, "scorer")
    [letter] = parsed.dead_letters
    assert not parsed.events
    assert letter.reason == f"message of {len(huge):,} bytes is over the 65,536-byte limit of a RentalEvent"
    assert letter.raw_value == huge and letter.raw_size == len(huge)  # the table keeps every byte
    assert letter.dead_letter_id == "rentals/1/42/scorer"


def test_on_the_topic_a_large_letter_carries_the_first_bytes_and_says_so():
    huge = bytes(range(256)) * 4000  # 1,024,000 bytes: base64 of it alone is past a 1 MB request
    letter = parse_records([Record(huge)], RentalEvent, "monitor").dead_letters[0]
    published = letter.on_topic()
    assert published.raw_value == huge[:MAX_DEAD_LETTER_RAW_BYTES] and published.raw_truncated
    assert published.raw_size == len(huge) and letter.raw_value == huge  # the original is untouched
    assert len(published.model_dump_json()) < 100_000
    round_trip = DeadLetter.model_validate_json(published.model_dump_json())
    assert round_trip.raw_value == huge[:MAX_DEAD_LETTER_RAW_BYTES]


def test_a_small_letter_goes_on_the_topic_as_it_is():
    letter = parse_records([Record(b"{not json")], RentalEvent, "scorer").dead_letters[0]
    assert letter.on_topic() is letter and not letter.raw_truncated and letter.raw_size == 9
