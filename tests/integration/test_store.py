"""The Postgres writes on a real server: upserts and the knock-on join in any order."""

import asyncio

import pytest
from sqlalchemy import create_engine, text

from rentalstream.db import async_engine, psycopg_url
from schemas.events import RentalEvent, utc_now
from scorer import store
from tests.helpers import SAMPLE_CAR

pytestmark = pytest.mark.integration

CAR = SAMPLE_CAR
PREVIOUS = RentalEvent(rental_id=100, car_id=7, checkin_type="connect", state="ended",
                       delay_at_checkout_minutes=95, car=CAR)  # fmt: skip
NEXT = RentalEvent(rental_id=101, car_id=7, checkin_type="connect", state="ended",
                   delay_at_checkout_minutes=-5, previous_ended_rental_id=100,
                   planned_gap_minutes=60, car=CAR)  # fmt: skip


def write(url, *events):
    async def go():
        engine = async_engine(url)
        try:
            return await store.write_rental_batch(
                engine, [(e, 0, i) for i, e in enumerate(events)], [], [], utc_now()
            )
        finally:
            await engine.dispose()

    return asyncio.run(go())


def delays_table(url):
    engine = create_engine(psycopg_url(url))
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT rental_id, is_late, previous_delay_minutes, waiting_minutes, is_conflict "
            "FROM delays ORDER BY rental_id"
        )).all()  # fmt: skip
    engine.dispose()
    return [tuple(r) for r in rows]


# rental 101 waits 95 - 60 = 35 minutes: a conflict
EXPECTED = [(100, True, None, None, None), (101, False, 95, 35, True)]


@pytest.mark.parametrize(
    "batches",
    [[(PREVIOUS,), (NEXT,)], [(NEXT,), (PREVIOUS,)], [(NEXT, PREVIOUS)], [(PREVIOUS, NEXT)]],
    ids=["previous-first", "previous-second", "same-batch-next-first", "same-batch-previous-first"],
)
def test_knock_on_is_found_whichever_side_arrives_second(clean_database, batches):
    for batch in batches:
        write(clean_database, *batch)
    assert delays_table(clean_database) == EXPECTED


def test_the_completing_batch_reports_the_completed_follower(clean_database):
    write(clean_database, NEXT)
    facts = write(clean_database, PREVIOUS)
    follower = next(f for f in facts if f.rental_id == 101)
    assert (follower.waiting_minutes, follower.is_conflict) == (35, True)


def test_redelivery_changes_nothing(clean_database):
    write(clean_database, NEXT, PREVIOUS)
    write(clean_database, NEXT, PREVIOUS)
    write(clean_database, NEXT)
    assert delays_table(clean_database) == EXPECTED
    engine = create_engine(psycopg_url(clean_database))
    with engine.connect() as conn:
        counts = conn.execute(text("SELECT (SELECT count(*) FROM rentals), (SELECT count(*) FROM cars)")).one()
    engine.dispose()
    assert tuple(counts) == (2, 1)
