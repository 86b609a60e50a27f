"""`rentalstream export`: result tables to CSV and Parquet on a real PostgreSQL, read back
and compared with what pandas reads from the same tables."""

import asyncio
import base64
import io
import json
import os
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import create_engine

from answers.exports import export_table
from producers.replay import rental_events
from runtime.postgres.engines import async_engine
from runtime.settings import normalised_database_url
from schemas import tables
from schemas.events import DeadLetter, PriceRequest
from scorer import store
from scorer.scoring import price_scored
from tests.conftest import DEFAULT_DATA_DIR
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

EARLY, LATE = datetime(2026, 11, 1, 8, tzinfo=UTC), datetime(2026, 11, 2, 8, tzinfo=UTC)


class TenPerHorsepower:
    name, version, interval = "fixed", "1", None


def fill(url: str, delays_xlsx, pricing_csv) -> None:
    """300 rentals with their prices (200 scored early, 100 late), a price request and a
    dead letter with bytes that are not text."""
    events = rental_events(delays_xlsx, pricing_csv, limit=300)

    def prices(batch, at):
        return [
            price_scored(
                price_id=f"rental-{e.rental_id}",
                price=e.car.engine_power / 10,
                car=e.car,
                model=TenPerHorsepower,
                event_time=e.event_time,
                scored_at=at,
                rental_id=e.rental_id,
                car_id=e.car_id,
            )
            for e in batch
        ]

    request = PriceRequest(request_id="req-1/0", car=events[0].car, client="exports")
    letter = DeadLetter(
        dead_letter_id="rentals/0/7/scorer",
        topic="rentals",
        partition=0,
        offset=7,
        key=None,
        raw_value=b"\xff\x00not json",
        reason="invalid JSON",
        consumer="scorer",
        received_at=LATE,
    )

    async def write():
        engine = async_engine(url)
        try:
            for batch, at in ((events[:200], EARLY), (events[200:], LATE)):
                rows = [(e, 0, i) for i, e in enumerate(batch)]
                await store.write_rental_batch(engine, rows, prices(batch, at), [], at)
            answer = prices([events[0]], LATE)[0].model_copy(update={"price_id": "req-1/0", "rental_id": None})
            await store.write_price_requests(engine, [(request, 0, 0)], [answer], [letter])
        finally:
            await engine.dispose()

    asyncio.run(write())


def table(url: str, name: str, key: str) -> pd.DataFrame:
    engine = create_engine(normalised_database_url(url))
    try:
        return pd.read_sql_table(name, engine).sort_values(key, ignore_index=True)
    finally:
        engine.dispose()


def values(column: pd.Series) -> list:
    """The column's values, a missing one as None whatever pandas made of it."""
    return [None if pd.isna(v) else v for v in column.tolist()]


def test_every_table_exports_to_csv_and_parquet_in_batches_as_stored(
    clean_database, delays_xlsx, pricing_csv, tmp_path
):
    fill(clean_database, delays_xlsx, pricing_csv)
    batches = []
    for name, key in (("prices", "price_id"), ("rentals", "rental_id"), ("price_requests", "request_id")):
        stored = table(clean_database, name, key)
        for fmt in ("csv", "parquet"):
            path = tmp_path / f"{name}.{fmt}"
            # 64 rows a batch: several batches, and one part-filled, for the 301 prices.
            written = export_table(clean_database, name, path, fmt, batch_rows=64, on_batch=batches.append)
            assert written == len(stored)
            # Text columns read as text: model_version "1" is a version, not the number 1.
            texts = {c: str for c in stored.columns if pd.api.types.is_string_dtype(stored[c])}
            read = pd.read_csv(path, dtype=texts) if fmt == "csv" else pd.read_parquet(path)
            read = read.sort_values(key, ignore_index=True)
            # In the schema's order, which a table migrated by `db upgrade` may not store its columns in.
            assert list(read.columns) == [c.name for c in tables.metadata.tables[name].columns]
            assert set(read.columns) == set(stored.columns)
            for column in stored.columns:
                if str(stored[column].dtype).startswith("datetime"):
                    assert (pd.to_datetime(read[column], utc=True) == stored[column]).all(), (name, fmt, column)
                elif column in ("car", "unknown_fields"):  # JSON text in both formats
                    assert [json.loads(v) for v in read[column]] == list(stored[column]), (name, fmt, column)
                else:
                    assert values(read[column]) == values(stored[column]), (name, fmt, column)
            assert not path.with_name(path.name + ".partial").exists()
    assert max(batches) == 64 and 301 % 64 in batches

    letters = tmp_path / "letters.csv"
    export_table(clean_database, "dead_letters", letters, "csv")
    assert base64.b64decode(pd.read_csv(letters).raw_value[0]) == b"\xff\x00not json"
    export_table(clean_database, "dead_letters", tmp_path / "letters.parquet", "parquet")
    assert pd.read_parquet(tmp_path / "letters.parquet").raw_value[0] == b"\xff\x00not json"


def test_the_command_filters_by_time_streams_to_stdout_and_refuses_what_it_cannot_do(
    clean_database, delays_xlsx, pricing_csv, tmp_path
):
    fill(clean_database, delays_xlsx, pricing_csv)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "RENTALSTREAM_DATA_DIR": os.environ.get("RENTALSTREAM_DATA_DIR", str(DEFAULT_DATA_DIR)),
        "RENTALSTREAM_DATABASE_URL": clean_database,
    }
    since = (EARLY + timedelta(hours=12)).isoformat()
    done = run_cli(env, "export", "prices", "--since", since, "--output", str(tmp_path / "late.csv"))
    assert done.returncode == 0, done.stderr
    late = pd.read_csv(tmp_path / "late.csv")
    assert len(late) == 101 and (pd.to_datetime(late.scored_at, utc=True) == LATE).all()
    assert "101 rows of prices with scored_at >= 2026-11-01T20:00:00+00:00 written to" in done.stderr

    naive = run_cli(env, "export", "prices", "--since", "2026-11-01T20:00", "--output", "-")
    assert naive.returncode == 0, naive.stderr
    assert len(pd.read_csv(io.StringIO(naive.stdout))) == 101  # a time without an offset is UTC

    nothing = run_cli(env, "export", "delays", "--since", "2030-01-01", "--output", str(tmp_path / "none.csv"))
    assert nothing.returncode == 0, nothing.stderr
    assert (tmp_path / "none.csv").read_text().startswith("rental_id,car_id,")  # the header alone
    assert len(pd.read_csv(tmp_path / "none.csv")) == 0

    for args, message in (
        (("export", "passwords"), "no table 'passwords'; the result tables: cars, rentals, prices"),
        (("export", "prices", "--format", "xlsx"), "--format: csv or parquet, not 'xlsx'"),
        (("export", "prices", "--since", "yesterday"), "--since: not an ISO 8601 time: 'yesterday'"),
        (("export", "prices", "--format", "parquet", "--output", "-"), "Parquet is binary: give --output PATH"),
    ):
        refused = run_cli(env, *args)
        assert refused.returncode == 2 and message in refused.stdout + refused.stderr, (args, refused)
