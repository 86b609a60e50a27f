import pytest
from pydantic import ValidationError

from schemas.events import DeadLetter, RentalEvent
from tests.helpers import SAMPLE_CAR

CAR = SAMPLE_CAR
RENTAL = {"rental_id": 10, "car_id": 5, "checkin_type": "mobile", "state": "ended", "car": CAR}


def test_a_history_row_validates():
    event = RentalEvent(**RENTAL, delay_at_checkout_minutes=-12, previous_ended_rental_id=9, planned_gap_minutes=60)
    assert event.delay_at_checkout_minutes == -12


@pytest.mark.parametrize(
    "change",
    [
        {"previous_ended_rental_id": 9},  # previous rental without a gap
        {"planned_gap_minutes": 30},  # gap without a previous rental
        {"previous_ended_rental_id": 10, "planned_gap_minutes": 0},  # follows itself
        {"planned_gap_minutes": 721, "previous_ended_rental_id": 9},  # gaps are < 12 h
        {"delay_at_checkout_minutes": 10**7},
        {"checkin_type": "paper"},
        {"state": "lost"},
        {"rental_id": 0},
    ],
)
def test_inconsistent_or_absurd_rentals_are_rejected(change):
    with pytest.raises(ValidationError):
        RentalEvent(**{**RENTAL, **change})


def test_dead_letter_keeps_the_exact_bytes_through_json():
    raw = b"\xff\xfe not utf-8 {"
    letter = DeadLetter(
        dead_letter_id="rentals/0/1/scorer",
        topic="rentals",
        partition=0,
        offset=1,
        key=None,
        raw_value=raw,
        reason="x",
        consumer="scorer",
        received_at="2026-01-01T00:00:00Z",
    )
    assert DeadLetter.model_validate_json(letter.model_dump_json()).raw_value == raw


def test_the_time_stamped_on_events_is_utc_with_its_offset():
    from datetime import timedelta

    from schemas.events import utc_now

    assert utc_now().utcoffset() == timedelta(0)  # aware: Postgres stores it as the same instant anywhere
