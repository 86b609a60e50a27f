"""`rentalstream drift-report --html` on a real PostgreSQL: the document's recent windows
and rolling error against pandas over the same tables, its text escaped, nothing loaded
from elsewhere, and what it says before the monitor has written anything. (The end-to-end tests in
tests/e2e/test_monitor.py run it on a clean and on a shifted stream.)"""

import asyncio
import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, insert

from answers.drift_report import drift_report, served_versions
from answers.drift_report_html import render
from monitor.detectors import DetectorSpec
from monitor.watch import DriftWatch
from producers.replay import rental_events
from runtime.postgres.engines import async_engine
from runtime.settings import normalised_database_url
from schemas import tables
from schemas.events import PriceRequest
from scorer import store
from scorer.scoring import price_scored
from tests.conftest import DEFAULT_DATA_DIR
from tests.drift_report_reading import external_loads, read_report
from tests.helpers import run_cli
from training.features import TARGET, read_pricing
from training.reference import reference_stats

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 1, 8, tzinfo=UTC)
WINDOW, MAE_WINDOW = 250, 100
HOSTILE = "rentals/<script>alert('x')</script>"


class Fixed:
    name, version, interval = "fixed", "7", None


@pytest.fixture(scope="module")
def reference(pricing_csv, delay_history):
    pricing = read_pricing(pricing_csv)
    return reference_stats(
        pricing, TARGET, pricing[TARGET] * 0.9, cv_mae=10.0, cv_rmse=15.0, delay_history=delay_history
    )


def fill(url: str, delays_xlsx, pricing_csv) -> None:
    """600 rentals in three batches, each priced; 300 price requests with a real price, each
    scored a second after the one before."""
    events = rental_events(delays_xlsx, pricing_csv, limit=600)

    def priced(batch, at):
        return [
            price_scored(
                price_id=f"rental-{e.rental_id}",
                price=e.car.engine_power / 2,
                car=e.car,
                model=Fixed,
                event_time=e.event_time,
                scored_at=at,
                rental_id=e.rental_id,
                car_id=e.car_id,
                estimated_error=e.car.engine_power / 20,
            )
            for e in batch
        ]

    requests = [
        PriceRequest(request_id=f"req-{i}", car=e.car, listed_price_per_day=100.0) for i, e in enumerate(events[:300])
    ]
    answers = [
        price_scored(
            price_id=r.request_id,
            price=80.0 + i % 40,  # errors 20, 19, ... 1, 0, 1, ... 19 €
            car=r.car,
            model=Fixed,
            event_time=START,
            scored_at=START + timedelta(seconds=i),
            request_id=r.request_id,
            listed_price_per_day=r.listed_price_per_day,
            estimated_error=12.0 + i % 5,
        )
        for i, r in enumerate(requests)
    ]

    async def write():
        engine = async_engine(url)
        try:
            for n, batch in enumerate((events[:200], events[200:400], events[400:])):
                at = START + timedelta(minutes=n)
                await store.write_rental_batch(
                    engine, [(e, 0, i) for i, e in enumerate(batch)], priced(batch, at), [], at
                )
            await store.write_price_requests(engine, [(r, 1, i) for i, r in enumerate(requests)], answers, [])
        finally:
            await engine.dispose()

    asyncio.run(write())


def monitor_wrote(url: str) -> None:
    """What the monitor would have written: one signal drifting, its alert, and an alert
    whose signal name is markup."""
    engine = create_engine(normalised_database_url(url))
    alert = {
        "detector": "ADWIN(delta=0.0001)", "state": "drifting", "before_n": 100, "before_mean": 1.0,
        "before_std": 0.1, "after_n": 50, "after_mean": 2.0, "after_std": 0.1, "reference_mean": 1.0,
        "reference_std": 0.1, "events_seen": 150, "triggered_by": "rental-1", "model_name": "fixed",
        "model_version": "7", "event_time": START,
    }  # fmt: skip
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(tables.drift_events),
                [
                    {**alert, "alert_id": "a-2", "signal": HOSTILE, "detected_at": START + timedelta(hours=2)},
                    {
                        **alert,
                        "alert_id": "a-1",
                        "signal": "rentals/mileage",
                        "detected_at": START + timedelta(hours=1),
                    },
                ],
            )
            conn.execute(
                insert(tables.drift_signals),
                [
                    {"signal": "rentals/mileage", "detector": alert["detector"], "state": "drifting",
                     "events_seen": 600, "window_n": 50, "last_alert_id": "a-1", "last_alert_at": START},
                    {"signal": "rentals/engine_power", "detector": alert["detector"], "state": "stable",
                     "events_seen": 600, "window_n": 600, "last_alert_id": None, "last_alert_at": None},
                ],
            )  # fmt: skip
    finally:
        engine.dispose()


def stored(url: str, sql: str) -> pd.DataFrame:
    engine = create_engine(normalised_database_url(url))
    try:
        return pd.read_sql(sql, engine)
    finally:
        engine.dispose()


def report_of(url: str, reference):
    versions = served_versions(url)
    report = drift_report(
        url, reference, "7", versions=versions, window=WINDOW, mae_window=MAE_WINDOW, mae_margin=0.25, now=START
    )
    html = render(report)
    assert external_loads(html) == []
    return read_report(html), html


def test_the_report_sets_the_recent_window_and_rolling_error_beside_the_reference(
    clean_database, delays_xlsx, pricing_csv, reference
):
    fill(clean_database, delays_xlsx, pricing_csv)
    before, _ = report_of(clean_database, reference)
    assert before.summary.startswith("The monitor has written no state yet")
    assert before.alerts == [] and all(s["state"] is None for s in before.signals.values())
    watched = {m.signal for m in DriftWatch(reference, DetectorSpec("adwin", 0.002)).monitors()}
    assert set(before.signals) == watched and len(watched) == 66  # every signal the monitor watches, no other

    monitor_wrote(clean_database)
    reading, html = report_of(clean_database, reference)
    assert reading.summary == "1 of 66 monitored signals drifting: rentals/mileage."
    assert [a["alert_id"] for a in reading.alerts] == ["a-1", "a-2"]  # in the order they were detected
    assert HOSTILE not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert reading.versions == ["7"]

    # The recent window: the last 250 rentals stored, with their cars.
    rentals = stored(clean_database, "SELECT * FROM rentals r JOIN cars c USING (car_id)")
    recent = rentals.sort_values(["stored_at", "rental_id"], ascending=False).head(WINDOW)
    mileage = reference.numeric["mileage"]
    expected_mileage = np.clip(recent.mileage.to_numpy(float), mileage.low, mileage.high).mean()
    assert reading.signals["rentals/mileage"]["recent"] == pytest.approx(expected_mileage, rel=1e-12)
    assert reading.signals["rentals/mileage"]["reference"] == pytest.approx(mileage.mean)
    assert reading.signals["rentals/fuel=diesel"]["recent"] == pytest.approx((recent.fuel == "diesel").mean())
    assert reading.signals["rentals/automatic_car=true"]["recent"] == pytest.approx(recent.automatic_car.mean())
    connect = rentals[rentals.checkin_type == "connect"].dropna(subset=["delay_at_checkout_minutes"])
    connect = connect.sort_values(["stored_at", "rental_id"], ascending=False).head(WINDOW)
    delay = reference.delays["connect"]
    assert reading.signals["rentals/delay.connect"]["recent_n"] == len(connect)
    assert reading.signals["rentals/delay.connect"]["recent"] == pytest.approx(
        np.clip(connect.delay_at_checkout_minutes.to_numpy(float), delay.low, delay.high).mean()
    )
    # Rolling error: the last 100 of the 300 requests, whose errors are |80 + i % 40 - 100|.
    errors = [abs(80 + i % 40 - 100) for i in range(300)]
    assert reading.signals["prices/absolute_error"]["recent"] == pytest.approx(np.mean(errors[-MAE_WINDOW:]))
    assert reading.signals["prices/absolute_error"]["reference"] == 10.0
    assert reading.signals["prices/price_per_day.requests"]["recent_n"] == WINDOW
    # The estimated error: the last 100 prices are the requests scored last (12 + i % 5 €),
    # over every price and over those with a real price alike.
    estimated = np.mean([12.0 + i % 5 for i in range(300)][-MAE_WINDOW:])
    assert reading.signals["prices/estimated_error"]["recent"] == pytest.approx(estimated)
    assert f"({estimated:.2f} € over the prices of the rolling MAE above)" in " ".join(html.split())


def test_a_version_without_histograms_and_a_registry_without_the_version(
    clean_database, delays_xlsx, pricing_csv, reference, tmp_path
):
    fill(clean_database, delays_xlsx, pricing_csv)
    older = reference.model_copy(
        update={
            "numeric": {n: d.model_copy(update={"histogram": None}) for n, d in reference.numeric.items()},
            "delays": {n: d.model_copy(update={"histogram": None}) for n, d in reference.delays.items()},
            "predicted_price": reference.predicted_price.model_copy(update={"histogram": None}),
        }
    )
    reading, html = report_of(clean_database, older)
    assert html.count("logged no reference histogram") == 6  # mileage, engine power, 2 delays, 2 prices
    assert reading.signals["rentals/mileage"]["recent_n"] == WINDOW  # the recent values are still drawn

    # The prices say v7 served; this registry has never heard of it.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "RENTALSTREAM_DATA_DIR": os.environ.get("RENTALSTREAM_DATA_DIR", str(DEFAULT_DATA_DIR)),
        "RENTALSTREAM_DATABASE_URL": clean_database,
        "RENTALSTREAM_REGISTRY_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}",
    }
    done = run_cli(env, "drift-report", "--html", str(tmp_path / "report.html"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot write the drift report" in done.stdout and "no version '7'" in done.stdout
    assert not (tmp_path / "report.html").exists()
