"""The Postgres writes on a real server: upserts and the knock-on join in any order."""

import asyncio

import pytest
from sqlalchemy import create_engine, text

from runtime.postgres.engines import async_engine
from runtime.postgres.upsert import COPY_FROM_ROWS
from runtime.settings import normalised_database_url
from schemas.cars import EQUIPMENT
from schemas.events import RentalEvent, utc_now
from scorer import store
from tests.helpers import SAMPLE_CAR

pytestmark = pytest.mark.integration

CAR = SAMPLE_CAR
PREVIOUS = RentalEvent(
    rental_id=100, car_id=7, checkin_type="connect", state="ended", delay_at_checkout_minutes=95, car=CAR
)
NEXT = RentalEvent(
    rental_id=101,
    car_id=7,
    checkin_type="connect",
    state="ended",
    delay_at_checkout_minutes=-5,
    previous_ended_rental_id=100,
    planned_gap_minutes=60,
    car=CAR,
)


def write(url, *events, driver="psycopg"):
    async def go():
        engine = async_engine(url, driver=driver)
        try:
            return await store.write_rental_batch(engine, [(e, 0, i) for i, e in enumerate(events)], [], [], utc_now())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def query(url, statement: str) -> list[tuple]:
    engine = create_engine(normalised_database_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(statement))]
    finally:
        engine.dispose()


def delays_table(url):
    return query(
        url,
        "SELECT rental_id, is_late, previous_delay_minutes, waiting_minutes, is_conflict "
        "FROM delays ORDER BY rental_id",
    )


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
    engine = create_engine(normalised_database_url(clean_database))
    with engine.connect() as conn:
        counts = conn.execute(text("SELECT (SELECT count(*) FROM rentals), (SELECT count(*) FROM cars)")).one()
    engine.dispose()
    assert tuple(counts) == (2, 1)


def test_price_requests_and_answers_are_upserted_last_write_wins(clean_database):
    """The request log keeps the car as JSON; an id twice in one batch (or again in a
    redelivery) leaves one row, the last written."""
    from schemas.events import PriceRequest, PriceScored

    now = utc_now()
    first = PriceRequest(request_id="r-1", car=CAR, client="first", event_time=now)
    again = PriceRequest(request_id="r-1", car=CAR, client="again", event_time=now)
    other = PriceRequest(request_id="r-2", car=CAR, reply_to="replies", event_time=now)
    answer = PriceScored(
        price_id="r-1",
        request_id="r-1",
        price_per_day=101.5,
        unknown_fields=["model_key"],
        model_name="m",
        model_version="3",
        event_time=now,
        scored_at=now,
    )

    async def go():
        engine = async_engine(clean_database)
        try:
            await store.write_price_requests(engine, [(first, 0, 1), (again, 0, 2), (other, 1, 7)], [answer], [])
            await store.write_price_requests(engine, [(other, 1, 7)], [answer], [])  # redelivered
        finally:
            await engine.dispose()

    asyncio.run(go())
    requests = query(
        clean_database, "SELECT request_id, client, reply_to, car, kafka_offset FROM price_requests ORDER BY request_id"
    )
    prices = query(clean_database, "SELECT price_id, price_per_day, unknown_fields, model_version FROM prices")
    assert requests == [
        ("r-1", "again", None, first.car.model_dump(), 2),
        ("r-2", None, "replies", first.car.model_dump(), 7),
    ]
    assert prices == [("r-1", 101.5, ["model_key"], "3")]


# psycopg serves; asyncpg's COPY is kept working for benchmarks/postgres_write_path.py (docs/decisions.md).
DRIVERS = pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])


@DRIVERS
def test_a_large_batch_goes_through_copy_and_stores_what_a_small_one_does(clean_database, driver):
    """250 rentals (over ``COPY_FROM_ROWS``: COPY into staging, then one upsert) twice, the
    second time with changed delays: every row once, the last write's values, and the
    knock-on computed within the batch."""

    def chain(delay_shift: int) -> list[RentalEvent]:
        # rentals 1000..1249 of car 9, each following the previous one 30 minutes later
        return [
            RentalEvent(
                rental_id=1000 + i,
                car_id=9,
                checkin_type="mobile",
                state="ended",
                delay_at_checkout_minutes=10 * (i % 7) + delay_shift,
                previous_ended_rental_id=999 + i if i else None,
                planned_gap_minutes=30 if i else None,
                car=CAR,
            )
            for i in range(250)
        ]

    assert len(chain(0)) >= COPY_FROM_ROWS
    write(clean_database, *chain(0), driver=driver)
    write(clean_database, *chain(25), driver=driver)  # redelivered with other delays: the last write wins
    rows = query(
        clean_database,
        "SELECT d.rental_id, d.delay_at_checkout_minutes, d.waiting_minutes, d.is_conflict, "
        "r.kafka_offset FROM delays d JOIN rentals r USING (rental_id) ORDER BY rental_id",
    )
    [(cars,)] = query(clean_database, "SELECT count(*) FROM cars")
    expected = []
    for i in range(250):
        delay = 10 * (i % 7) + 25
        waiting = (10 * ((i - 1) % 7) + 25) - 30 if i else None
        expected.append((1000 + i, delay, waiting, waiting > 0 if i else None, i))
    assert rows == expected
    assert cars == 1


@DRIVERS
def test_a_large_batch_of_price_requests_keeps_each_car_as_json(clean_database, driver):
    """150 requests (the COPY path, with a JSONB column and a text array): each car comes
    back as the contract dumped it, each answer with its unknown fields."""
    from schemas.events import PriceRequest, PriceScored

    now = utc_now()
    cars = [{**CAR, "mileage": 1_000 * i, "model_key": "Renault" if i % 2 else "Unheard-of"} for i in range(150)]
    requests = [PriceRequest(request_id=f"r-{i}", car=car, event_time=now) for i, car in enumerate(cars)]
    answers = [
        PriceScored(
            price_id=r.request_id,
            request_id=r.request_id,
            price_per_day=float(i),
            unknown_fields=r.car.unknown_fields,
            model_name="m",
            model_version="3",
            event_time=now,
            scored_at=now,
        )
        for i, r in enumerate(requests)
    ]

    async def go():
        engine = async_engine(clean_database, driver=driver)
        try:
            await store.write_price_requests(engine, [(r, 0, i) for i, r in enumerate(requests)], answers, [])
        finally:
            await engine.dispose()

    asyncio.run(go())
    stored = query(
        clean_database,
        "SELECT r.car, p.unknown_fields FROM price_requests r JOIN prices p "
        "ON p.price_id = r.request_id ORDER BY r.kafka_offset",
    )
    assert len(stored) == len(cars) >= COPY_FROM_ROWS
    for (car, unknown), sent in zip(stored, cars, strict=True):
        assert car == {**dict.fromkeys(EQUIPMENT, False), **sent}  # the contract's defaults filled in
        assert unknown == ([] if sent["model_key"] == "Renault" else ["model_key"])


def test_a_request_and_its_answer_are_stored_together_or_not_at_all(clean_database):
    """A /predict's request and price go in one statement without a transaction around it:
    an answer the table refuses (a model version longer than its column) leaves no request
    logged either; with a dead letter beside them they go in a transaction, just as whole."""
    from sqlalchemy.exc import DBAPIError

    from schemas.events import DeadLetter, PriceRequest, PriceScored

    now = utc_now()
    request = PriceRequest(request_id="r-9", car=CAR, reply_to="replies", event_time=now)

    def answer(version: str) -> PriceScored:
        return PriceScored(
            price_id="r-9", request_id="r-9", price_per_day=80.0, unknown_fields=[], model_name="m",
            model_version=version, event_time=now, scored_at=now,
        )  # fmt: skip

    letter = DeadLetter(
        dead_letter_id="price-requests/0/8", topic="price-requests", partition=0, offset=8, key=None,
        raw_value=b"{", reason="not JSON", consumer="scorer", received_at=now,
    )  # fmt: skip

    # Past the column's 32 characters, which the contract also refuses: built unvalidated, so
    # that the database is what refuses it.
    too_long = answer("4").model_copy(update={"model_version": "x" * 40})

    async def go():
        engine = async_engine(clean_database)
        try:
            for dead in ([], [letter]):
                with pytest.raises(DBAPIError, match="too long"):
                    await store.write_price_requests(engine, [(request, 0, 9)], [too_long], dead)
                assert query(clean_database, "SELECT count(*) FROM price_requests") == [(0,)]
            await store.write_price_requests(engine, [(request, 0, 9)], [answer("4")], [])
        finally:
            await engine.dispose()

    asyncio.run(go())
    assert query(clean_database, "SELECT request_id, reply_to, kafka_offset FROM price_requests") == [
        ("r-9", "replies", 9)
    ]
    assert query(clean_database, "SELECT price_id, model_version FROM prices") == [("r-9", "4")]
    assert query(clean_database, "SELECT count(*) FROM dead_letters") == [(0,)]


def test_a_connection_the_server_dropped_costs_one_retry_without_a_ping(clean_database):
    """The scorer's engine does not ping a pooled connection before each transaction: the
    first write on one the server has dropped fails, the pool is discarded, and the retry
    (the scorer's with_retries) stores the batch on a fresh connection."""
    from sqlalchemy.exc import DBAPIError

    from runtime.postgres.retries import with_retries

    failures: list[BaseException] = []

    async def go():
        engine = async_engine(clean_database, ping_on_checkout=False)
        try:
            await store.write_rental_batch(engine, [(PREVIOUS, 0, 0)], [], [], utc_now())
            async with engine.connect() as conn:  # the one pooled connection: the server drops it
                pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            assert query(clean_database, f"SELECT pg_terminate_backend({pid})") == [(True,)]
            await with_retries(
                lambda: store.write_rental_batch(engine, [(NEXT, 0, 1)], [], [], utc_now()),
                retries=2,
                on_retry=lambda state: failures.append(state.outcome.exception()),
            )
        finally:
            await engine.dispose()

    asyncio.run(go())
    assert len(failures) == 1 and isinstance(failures[0], DBAPIError)  # the dropped connection, once
    assert [row[0] for row in delays_table(clean_database)] == [100, 101]
