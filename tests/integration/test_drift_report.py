"""`rentalstream drift-report` over rows in a real PostgreSQL, and `db upgrade` adding a
column a table gained."""

import pytest
from sqlalchemy import create_engine, insert, inspect, text
from typer.testing import CliRunner

from rentalstream.cli import app
from runtime.postgres import engines
from runtime.settings import normalised_database_url
from schemas import tables

pytestmark = pytest.mark.integration


def signal_row(signal, state, seen, mean, reference):
    return {
        "signal": signal,
        "detector": "ADWIN(delta=0.0001)",
        "state": state,
        "events_seen": seen,
        "window_n": seen,
        "window_mean": mean,
        "reference_mean": reference,
        "model_version": "3",
    }


def run(args, database_url):
    return CliRunner().invoke(app, args, env={"RENTALSTREAM_DATABASE_URL": database_url, "COLUMNS": "120"})


def test_drift_report_lists_drifting_signals_first(clean_database):
    engine = create_engine(normalised_database_url(clean_database))
    with engine.begin() as conn:
        conn.execute(
            insert(tables.drift_signals),
            [
                signal_row("rentals/engine_power", "stable", 1200, 118.5, 120.0),
                signal_row("rentals/mileage", "drifting", 1200, 281_000.0, 140_464.2),
                signal_row("delays/is_conflict", "stable", 300, 0.13, 0.1261),
            ],
        )
    engine.dispose()

    everything = run(["drift-report"], clean_database)
    assert everything.exit_code == 0, everything.output
    lines = [line.split() for line in everything.output.splitlines()]
    signals = [line[0] for line in lines if line and "/" in line[0]]
    assert signals == ["rentals/mileage", "delays/is_conflict", "rentals/engine_power"]
    assert ["rentals/mileage", "drifting", "1,200", "281,000", "140,464"] in lines
    assert "drift: 1 signal(s) drifting of 3" in everything.output and "model v3" in everything.output

    drifting = run(["drift-report", "--drifting-only"], clean_database)
    assert "rentals/mileage" in drifting.output and "engine_power" not in drifting.output


def test_drift_report_without_a_monitor_says_so(clean_database):
    result = run(["drift-report"], clean_database)
    assert result.exit_code == 0 and "is the monitor running?" in result.output


def test_upgrade_adds_a_column_a_table_gained(database_url):
    engine = create_engine(normalised_database_url(database_url))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE prices DROP COLUMN listed_price_per_day"))
    try:
        assert engines.upgrade(database_url) == ["prices.listed_price_per_day"]
        assert "listed_price_per_day" in {c["name"] for c in inspect(engine).get_columns("prices")}
        assert engines.upgrade(database_url) == []
    finally:
        engines.upgrade(database_url)  # leave the table whole for the other tests
        engine.dispose()
