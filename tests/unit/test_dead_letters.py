"""Oversized messages: refused unread, and their dead letters still fit on the topic."""

import json
from dataclasses import dataclass

from runtime.kafka.dead_letters import parse_records
from schemas.events import MAX_DEAD_LETTER_RAW_BYTES, MAX_MESSAGE_BYTES, DeadLetter, RentalEvent
from tests.unit.test_events import RENTAL


@dataclass
class Record:
    value: bytes | None
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


def test_a_message_of_exactly_the_limit_is_read_and_one_past_it_is_not():
    # A valid rental padded with spaces (JSON whitespace) to exactly the limit.
    valid = json.dumps(RENTAL).encode()
    at_limit = valid + b" " * (MAX_MESSAGE_BYTES - len(valid))
    parsed = parse_records([Record(at_limit), Record(at_limit + b" ")], RentalEvent, "scorer")
    assert [event.rental_id for _, event in parsed.events] == [RENTAL["rental_id"]]
    assert len(parsed.dead_letters) == 1 and "over the 65,536-byte limit" in parsed.dead_letters[0].reason


def test_each_record_is_judged_on_its_own_in_batch_order():
    good = json.dumps(RENTAL).encode()
    huge = b" " * (MAX_MESSAGE_BYTES + 1)
    records = [Record(huge, offset=1), Record(good, offset=2), Record(b"{", offset=3), Record(good, offset=4)]
    parsed = parse_records(records, RentalEvent, "scorer")
    assert [record.offset for record, _ in parsed.events] == [2, 4]
    assert [letter.offset for letter in parsed.dead_letters] == [1, 3]


def test_a_letter_keeps_the_key_as_text_even_when_it_is_not_utf8_and_an_empty_message_as_empty():
    [letter] = parse_records([Record(b"", key=b"car-\xff")], RentalEvent, "monitor").dead_letters
    assert letter.key == "car-\ufffd"  # undecodable bytes replaced, not an error
    assert letter.raw_value == b"" and letter.raw_size == 0
    # No field to name: the message itself, read as the empty message it is.
    assert letter.reason == "invalid RentalEvent: message: Invalid JSON: EOF while parsing a value at line 1 column 0"
    [absent] = parse_records([Record(None)], RentalEvent, "monitor").dead_letters  # a tombstone: no value at all
    assert absent.reason == letter.reason and absent.raw_value == b""
    [keyless] = parse_records([Record(b"{", key=None)], RentalEvent, "monitor").dead_letters
    assert keyless.key is None
    assert keyless.dead_letter_id == "rentals/1/42/monitor" and keyless.consumer == "monitor"


def test_the_reason_names_each_failing_field_and_counts_those_past_five():
    bad = {
        **RENTAL,
        "rental_id": "seven",
        "car_id": "x",
        "state": "lost",
        "checkin_type": "walk",
        "planned_gap_minutes": "y",
        "delay_at_checkout_minutes": "z",
        "previous_ended_rental_id": "w",
    }
    [letter] = parse_records([Record(json.dumps(bad).encode())], RentalEvent, "scorer").dead_letters
    head, _, rest = letter.reason.partition(": ")
    assert head == "invalid RentalEvent"
    parts = rest.split("; ")
    assert len(parts) == 5
    assert parts[0].startswith("rental_id: Input should be a valid integer")
    assert "seven" not in letter.reason  # the reason names the field, it does not echo the payload
    assert "https://" not in letter.reason  # nor pydantic's documentation links
    assert letter.reason.endswith(" (+2 more)")
    [one] = parse_records([Record(json.dumps({**RENTAL, "car_id": "x"}).encode())], RentalEvent, "s").dead_letters
    assert (
        one.reason
        == "invalid RentalEvent: car_id: Input should be a valid integer, unable to parse string as an integer"
    )


def test_a_letter_of_exactly_the_topic_limit_goes_whole_and_one_byte_more_is_cut():
    exact = b"x" * MAX_DEAD_LETTER_RAW_BYTES
    letter = parse_records([Record(exact)], RentalEvent, "scorer").dead_letters[0]
    assert letter.on_topic().raw_value == exact and not letter.on_topic().raw_truncated
    longer = parse_records([Record(exact + b"y")], RentalEvent, "scorer").dead_letters[0]
    assert longer.on_topic().raw_value == exact and longer.on_topic().raw_truncated


def bad_rental(fields: int) -> bytes:
    """A rental with its first ``fields`` of seven fields given a wrong type."""
    wrong = [
        "rental_id",
        "car_id",
        "state",
        "checkin_type",
        "planned_gap_minutes",
        "delay_at_checkout_minutes",
        "previous_ended_rental_id",
    ][:fields]
    return json.dumps({**RENTAL, **{key: [] for key in wrong}}).encode()


def test_five_failing_fields_are_all_named_and_a_sixth_is_counted():
    def reason(fields: int) -> str:
        return parse_records([Record(bad_rental(fields))], RentalEvent, "scorer").dead_letters[0].reason

    assert reason(2) == (
        "invalid RentalEvent: rental_id: Input should be a valid integer; car_id: Input should be a valid integer"
    )
    assert reason(5).count("; ") == 4 and not reason(5).endswith("more)")
    assert reason(6).count("; ") == 4 and reason(6).endswith(" (+1 more)")
