"""Replay → broker → scorer (a real process) → Postgres, checked against pandas."""

import asyncio
import json
import urllib.request

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from aiokafka import AIOKafkaProducer

from producers.replay import publish_events, rental_events
from tests.helpers import query, reference_prices, wait_for

pytestmark = pytest.mark.e2e
ROWS = 3000


def count(url, table):
    return int(query(url, f"SELECT count(*) AS n FROM {table}").n[0])


def expected_from_pandas(delays_xlsx):
    """The same facts, computed straight from the spreadsheet with pandas."""
    history = pd.read_excel(delays_xlsx, sheet_name="rentals_data").head(ROWS)
    by_state_and_type = history.groupby(["state", "checkin_type"]).size().to_dict()
    delay = history["delay_at_checkout_in_minutes"]
    delay_stats = {
        "with_delay": int(delay.notna().sum()),
        "late": int((delay > 0).sum()),
        "mean": float(delay.mean()),
        "min": int(delay.min()),
        "max": int(delay.max()),
    }
    pairs = history.merge(
        history[["rental_id", "delay_at_checkout_in_minutes"]],
        left_on="previous_ended_rental_id",
        right_on="rental_id",
        suffixes=("", "_previous"),
    )
    waiting = pairs["delay_at_checkout_in_minutes_previous"] - pairs["time_delta_with_previous_rental_in_minutes"]
    conflicts = set(pairs.loc[waiting > 0, "rental_id"])
    return history, by_state_and_type, delay_stats, conflicts, dict(zip(pairs.rental_id, waiting))


def test_replayed_history_lands_in_postgres_as_pandas_computes_it(
    scorer_process, scorer_env, clean_database, mlflow_registry, delays_xlsx, pricing_csv, tmp_path
):
    history, by_state_and_type, delay_stats, conflicts, waiting = expected_from_pandas(delays_xlsx)
    events = rental_events(delays_xlsx, pricing_csv, limit=ROWS)
    stats = asyncio.run(publish_events(scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], events))
    assert stats.published == ROWS

    wait_for(
        lambda: count(clean_database, "delays") >= ROWS,
        180,
        f"{ROWS} delay rows",
        scorer_process,
        tmp_path / "scorer.log",
    )

    stored = query(clean_database, "SELECT * FROM delays")
    assert len(stored) == ROWS and count(clean_database, "rentals") == ROWS
    assert count(clean_database, "dead_letters") == 0
    assert stored.groupby(["state", "checkin_type"]).size().to_dict() == by_state_and_type
    delay = stored["delay_at_checkout_minutes"]
    assert int(delay.notna().sum()) == delay_stats["with_delay"]
    assert int(stored["is_late"].fillna(False).sum()) == delay_stats["late"]
    assert float(delay.mean()) == pytest.approx(delay_stats["mean"])
    assert (int(delay.min()), int(delay.max())) == (delay_stats["min"], delay_stats["max"])
    assert int(stored["previous_ended_rental_id"].notna().sum()) == int(
        history["previous_ended_rental_id"].notna().sum()
    )
    assert set(stored.loc[stored["is_conflict"].fillna(False).astype(bool), "rental_id"]) == conflicts
    joined = stored.dropna(subset=["waiting_minutes"]).set_index("rental_id")["waiting_minutes"]
    assert joined.to_dict() == {k: v for k, v in waiting.items() if not np.isnan(v)}

    # Every ended rental is priced by the registered champion, and the stored price is
    # what the registered model says for that car's profile.
    _, training = mlflow_registry
    prices = query(
        clean_database,
        """
        SELECT p.*, c.* FROM prices p JOIN rentals r USING (rental_id) JOIN cars c ON c.car_id = r.car_id
        WHERE r.state = 'ended'
    """,
    )
    assert len(prices) == by_state_and_type.get(("ended", "mobile"), 0) + by_state_and_type.get(("ended", "connect"), 0)
    assert set(prices["model_version"]) == {training.champion_version}
    assert set(prices["model_name"]) == {"rentalstream-price"}
    mlflow.set_tracking_uri(mlflow_registry[0])
    model = mlflow.lightgbm.load_model(f"models:/rentalstream-price/{training.champion_version}")
    assert prices["price_per_day"].to_numpy() == pytest.approx(reference_prices(model, prices), abs=0.006)

    # The operator's view of the same run: ready (the rentals consumer can finish the rows
    # before the embedded broker, ~5 s per group, has assigned the price-requests one),
    # and the counters agree with Postgres.
    base = f"http://127.0.0.1:{scorer_env['RENTALSTREAM_SCORER_PORT']}"
    wait_for(
        lambda: httpx.get(f"{base}/ready", timeout=5).status_code == 200,
        60,
        "the scorer's /ready",
        scorer_process,
        tmp_path / "scorer.log",
    )
    exposition = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert f'rentalstream_events_scored_total{{topic="rentals"}} {float(ROWS)}' in exposition
    assert f"rentalstream_conflicts_found_total {float(len(conflicts))}" in exposition
    assert (
        f'rentalstream_model_info{{name="rentalstream-price",version="{training.champion_version}"}} 1.0' in exposition
    )


def test_malformed_messages_are_dead_lettered_and_scoring_goes_on(
    scorer_process, scorer_env, clean_database, delays_xlsx, pricing_csv, tmp_path
):
    good = rental_events(delays_xlsx, pricing_csv, limit=40)
    valid = [e.model_dump_json().encode() for e in good]
    template = json.loads(valid[0])
    bad = [
        b"{not json",
        b"",
        json.dumps({**template, "rental_id": "abc"}).encode(),
        json.dumps({k: v for k, v in template.items() if k != "car"}).encode(),
        json.dumps({**template, "car": {**template["car"], "fuel": "kerosene"}}).encode(),
        json.dumps({**template, "delay_at_checkout_minutes": 10**9}).encode(),
        "\u00e9t\u00e9".encode("latin-1"),
    ]

    async def publish():
        producer = AIOKafkaProducer(bootstrap_servers=scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"])
        await producer.start()
        try:
            for value in valid[:20] + bad + valid[20:]:
                await producer.send_and_wait("rentals", value, key=b"k")
        finally:
            await producer.stop()

    asyncio.run(publish())
    wait_for(
        lambda: count(clean_database, "rentals") >= 40 and count(clean_database, "dead_letters") >= len(bad),
        180,
        "40 rentals and the dead letters",
        scorer_process,
        tmp_path / "scorer.log",
    )
    letters = query(clean_database, "SELECT * FROM dead_letters ORDER BY kafka_offset")
    assert len(letters) == len(bad)
    assert [bytes(v) for v in letters["raw_value"]] == bad
    assert letters["reason"].str.len().min() > 10
    assert set(letters["topic"]) == {"rentals"} and set(letters["consumer"]) == {"scorer"}
    assert count(clean_database, "rentals") == 40
    assert scorer_process.poll() is None  # still up
