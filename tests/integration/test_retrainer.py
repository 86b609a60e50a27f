"""The retrainer on a real PostgreSQL and MLflow registry: a stored alert of the model's
error, and labelled price requests whose true prices moved, lead to one retrain into
@challenger, which prices the moved world better than the champion on cars it never
learned from. Expected values come from the stored rows and from the registered models
themselves (loaded by MLflow, fed through pandas), never from the retrainer."""

from datetime import timedelta

import mlflow
import numpy as np
import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.exc import IntegrityError

from runtime.settings import Settings, normalised_database_url
from schemas import tables
from schemas.events import utc_now
from tests.conftest import as_role
from tests.helpers import registry_copy
from training.features import TARGET, build_features, read_pricing
from training.retrain import RETRAIN_PROTOCOL
from training.retrainer import Retrainer, RetrainerMetrics
from training.train import train_and_register

pytestmark = pytest.mark.integration

SHIFT = 1.3  # every true price moved by +30%
ASKED = 1_500  # listings asked about with their moved price; the rest are held out
MAE_ALERT = "prices/absolute_error@prices/0/41"


def store_labelled_requests(url, cars, now):
    """Price requests as the scorer stores them, each answered by the champion and with
    its (moved) true price."""
    requests, prices = [], []
    for i, car in enumerate(cars):
        request_id = f"request-{i}"
        at = now - timedelta(seconds=len(cars) - i)
        features = {k: (v.item() if hasattr(v, "item") else v) for k, v in car.items() if k != TARGET}
        requests.append(
            {
                "request_id": request_id,
                "car": features,
                "requested_at": at,
                "kafka_partition": 0,
                "kafka_offset": i,
            }
        )
        prices.append(
            {
                "price_id": request_id,
                "request_id": request_id,
                "price_per_day": car[TARGET],
                "listed_price_per_day": round(car[TARGET] * SHIFT, 2),
                "unknown_fields": [],
                "model_name": "rentalstream-price",
                "model_version": "1",
                "event_time": at,
                "scored_at": at,
            }
        )
    with admin(url).begin() as conn:
        conn.execute(tables.price_requests.insert(), requests)
        conn.execute(tables.prices.insert(), prices)


def store_alert(url, alert_id, signal, at):
    """A drift alert and its signal's state, as the monitor stores them."""
    with admin(url).begin() as conn:
        conn.execute(
            tables.drift_events.insert(),
            {
                "alert_id": alert_id,
                "signal": signal,
                "detector": "RollingMAE",
                "state": "drifting",
                **{f"{side}_{k}": 1.0 for side in ("before", "after") for k in ("n", "mean", "std")},
                "events_seen": 600,
                "triggered_by": "request-599",
                "event_time": at,
                "detected_at": at,
            },
        )
        conn.execute(
            tables.drift_signals.insert(),
            {
                "signal": signal,
                "detector": "RollingMAE",
                "state": "drifting",
                "events_seen": 600,
                "window_n": 500,
                "last_alert_id": alert_id,
                "last_alert_at": at,
            },
        )


def admin(url):
    return create_engine(normalised_database_url(url))


@pytest.fixture
def moved_world(clean_database, pricing_csv):
    """The pricing table split into the listings asked about (stored with moved true
    prices) and those held out."""
    pricing = read_pricing(pricing_csv)
    order = np.random.default_rng(7).permutation(len(pricing))
    asked, held_out = pricing.iloc[order[:ASKED]], pricing.iloc[order[ASKED:]]
    store_labelled_requests(clean_database, asked.to_dict(orient="records"), utc_now())
    return asked, held_out


def test_an_error_alert_with_moved_labels_retrains_once_into_a_challenger_that_prices_the_moved_world_better(
    clean_database, moved_world, mlflow_registry, data_dir, pricing_csv, delay_history, tmp_path, monkeypatch
):
    asked, held_out = moved_world
    uri = registry_copy(mlflow_registry, tmp_path)
    store_alert(clean_database, MAE_ALERT, "prices/absolute_error", utc_now())
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", as_role(clean_database, "rentalstream_retrainer"))
    monkeypatch.setenv("RENTALSTREAM_REGISTRY_TRACKING_URI", uri)
    monkeypatch.setenv("RENTALSTREAM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RENTALSTREAM_RETRAIN", "challenger")
    settings = Settings(_env_file=None)
    metrics = RetrainerMetrics()
    retrainer = Retrainer(settings, metrics)
    try:
        row = retrainer.look()
        assert row is not None and row["status"] == "registered", row
        assert (row["alert_id"], row["signal"], row["reason"]) == (MAE_ALERT, "prices/absolute_error", "error")
        assert (row["recent_rows"], row["reference_rows"]) == (asked.drop_duplicates().shape[0], len(held_out) + ASKED)
        assert row["model_version"] == "2" and row["finished_at"] >= row["started_at"]
        assert metrics.retrains.labels("registered")._value.get() == 1 and metrics.in_flight._value.get() == 0

        assert retrainer.look() is None  # the same alert never starts a second retrain
        with admin(clean_database).connect() as conn:
            assert conn.execute(select(tables.retrains.c.alert_id)).scalars().all() == [MAE_ALERT]
        # A new alert waits out the cooldown the registered challenger gets, then is claimed.
        store_alert(clean_database, "prices/estimated_error@prices/2/7", "prices/estimated_error", utc_now())
        cooldown = timedelta(seconds=settings.retrainer.cooldown_seconds)
        assert retrainer.claim(utc_now()) is None
        claimed = retrainer.claim(row["finished_at"] + cooldown + timedelta(seconds=1))
        assert claimed is not None and claimed.alert.alert_id == "prices/estimated_error@prices/2/7"
    finally:
        retrainer.engine.dispose()

    client = mlflow.MlflowClient(uri)
    assert str(client.get_model_version_by_alias("rentalstream-price", "challenger").version) == "2"
    assert str(client.get_model_version_by_alias("rentalstream-price", "champion").version) == "1"
    run = client.get_run(row["run_id"])
    assert run.data.tags["protocol"] == RETRAIN_PROTOCOL
    assert run.data.tags["retrain_alert_id"] == MAE_ALERT
    assert run.data.metrics["cv_mae_mean"] == pytest.approx(row["cv_mae"])

    # Promoted, it is not replaced by a model trained on the reference table alone.
    client.set_registered_model_alias("rentalstream-price", "champion", "2")
    again = train_and_register(
        read_pricing(pricing_csv),
        delay_history,
        tracking_uri=uri,
        experiment_name="rentalstream-price",
        model_name="rentalstream-price",
    )
    assert not again.promoted and again.champion_version == "2"

    # On the listings nobody asked about, at their moved prices.
    mlflow.set_tracking_uri(uri)
    moved = held_out[TARGET].to_numpy() * SHIFT
    mae = {
        version: float(
            np.mean(
                np.abs(
                    mlflow.lightgbm.load_model(f"models:/rentalstream-price/{version}").predict(
                        build_features(held_out)
                    )
                    - moved
                )
            )
        )
        for version in ("1", "2")
    }
    print(f"held-out MAE at moved prices: champion {mae['1']:.2f} €, challenger {mae['2']:.2f} €")
    assert mae["2"] < 0.75 * mae["1"]


def test_no_retrain_starts_while_one_is_in_flight_and_only_one_can_be_running(clean_database, monkeypatch):
    now = utc_now()
    with admin(clean_database).begin() as conn:
        conn.execute(
            tables.retrains.insert(),
            {
                "alert_id": "earlier",
                "signal": "rentals/mileage",
                "reason": "sustained drift",
                "status": "running",
                "started_at": now - timedelta(minutes=1),
            },
        )
    store_alert(clean_database, MAE_ALERT, "prices/absolute_error", now)
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", as_role(clean_database, "rentalstream_retrainer"))
    retrainer = Retrainer(Settings(_env_file=None), RetrainerMetrics())
    try:
        assert retrainer.claim(utc_now()) is None  # due, but one is in flight
        with pytest.raises(IntegrityError), retrainer.engine.begin() as conn:  # and the table itself refuses two
            conn.execute(
                tables.retrains.insert(),
                {
                    "alert_id": MAE_ALERT,
                    "signal": "prices/absolute_error",
                    "reason": "error",
                    "status": "running",
                    "started_at": now,
                },
            )
        # A running retrain older than max_seconds was left by a retrainer that died.
        later = utc_now() + timedelta(seconds=Settings(_env_file=None).retrainer.max_seconds)
        claimed = retrainer.claim(later)
        assert claimed is not None and claimed.alert.alert_id == MAE_ALERT
        with admin(clean_database).connect() as conn:
            statuses = dict(conn.execute(select(tables.retrains.c.alert_id, tables.retrains.c.status)).all())
        assert statuses == {"earlier": "abandoned", MAE_ALERT: "running"}
    finally:
        retrainer.engine.dispose()


def test_a_drift_of_the_cars_sets_off_a_retrain_once_it_has_lasted_and_only_while_its_signal_still_drifts(
    clean_database, monkeypatch
):
    """The sustained-drift rule on the rows the monitor stores, read as the retrainer's
    role reads them: a drift of what cars are asked about sets off nothing until it has
    lasted ``sustain_seconds`` (300 by default); one whose signal is stable again and a
    drift of the checkout delays never do, however long ago they were raised."""
    now = utc_now()
    store_alert(clean_database, "rentals/delay.connect@rentals/0/10", "rentals/delay.connect", now - timedelta(hours=1))
    store_alert(clean_database, "rentals/engine_power@rentals/1/20", "rentals/engine_power", now - timedelta(hours=1))
    with admin(clean_database).begin() as conn:  # the monitor's next alert on it said stable
        conn.execute(
            update(tables.drift_signals)
            .where(tables.drift_signals.c.signal == "rentals/engine_power")
            .values(state="stable", last_alert_id="rentals/engine_power@rentals/1/400")
        )
    mileage = "rentals/mileage@rentals/2/30"
    store_alert(clean_database, mileage, "rentals/mileage", now)
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", as_role(clean_database, "rentalstream_retrainer"))
    settings = Settings(_env_file=None)
    retrainer = Retrainer(settings, RetrainerMetrics())
    sustain = timedelta(seconds=settings.retrainer.sustain_seconds)
    try:
        assert retrainer.claim(now + sustain - timedelta(seconds=1)) is None  # not lasted long enough yet
        claimed = retrainer.claim(now + sustain)
        assert claimed is not None and (claimed.alert.alert_id, claimed.reason) == (mileage, "sustained drift")
        row = retrainer.row(mileage)
        assert (row["signal"], row["reason"], row["status"]) == ("rentals/mileage", "sustained drift", "running")
        with admin(clean_database).connect() as conn:
            assert conn.execute(select(tables.retrains.c.alert_id)).scalars().all() == [mileage]
    finally:
        retrainer.engine.dispose()


def test_a_challenger_weighed_on_enough_true_prices_ends_its_cooldown_early(clean_database, monkeypatch):
    """After v2 was registered a minute ago, a new error alert waits out the cooldown,
    unless v2 has already priced ``weighed_prices`` requests whose true price came back;
    the prices it gave without a true price, and those of other versions, do not count."""
    now = utc_now()
    with admin(clean_database).begin() as conn:
        conn.execute(
            tables.retrains.insert(),
            {
                "alert_id": MAE_ALERT,
                "signal": "prices/absolute_error",
                "reason": "error",
                "status": "registered",
                "started_at": now - timedelta(minutes=5),
                "finished_at": now - timedelta(minutes=1),
                "model_version": "2",
            },
        )
    store_alert(clean_database, "prices/absolute_error@prices/0/900", "prices/absolute_error", now)
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", as_role(clean_database, "rentalstream_retrainer"))
    settings = Settings(_env_file=None)
    needed = settings.retrainer.weighed_prices

    def priced(first: int, count: int, *, challenger: str = "2", true_price: float | None = 120.0) -> None:
        rows = [
            {
                "price_id": f"request-{i}",
                "request_id": f"request-{i}",
                "price_per_day": 110.0,
                "listed_price_per_day": true_price,
                "challenger_model_version": challenger,
                "challenger_price_per_day": 118.0,
                "unknown_fields": [],
                "model_name": "rentalstream-price",
                "model_version": "1",
                "event_time": now,
                "scored_at": now,
            }
            for i in range(first, first + count)
        ]
        with admin(clean_database).begin() as conn:
            conn.execute(tables.prices.insert(), rows)

    priced(0, needed - 1)
    priced(1000, 50, true_price=None)  # no true price came back
    priced(2000, 50, challenger="3")  # another challenger's
    retrainer = Retrainer(settings, RetrainerMetrics())
    try:
        assert retrainer.claim(utc_now()) is None  # one true price short: still cooling down
        priced(needed - 1, 1)
        claimed = retrainer.claim(utc_now())
        assert claimed is not None and claimed.alert.alert_id == "prices/absolute_error@prices/0/900"
    finally:
        retrainer.engine.dispose()


def test_an_alert_with_too_few_labelled_requests_is_answered_without_a_retrain(
    clean_database, pricing_csv, data_dir, tmp_path, monkeypatch
):
    asked = read_pricing(pricing_csv).head(120)
    store_labelled_requests(clean_database, asked.to_dict(orient="records"), utc_now())
    store_alert(clean_database, MAE_ALERT, "prices/absolute_error", utc_now())
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", as_role(clean_database, "rentalstream_retrainer"))
    monkeypatch.setenv("RENTALSTREAM_REGISTRY_TRACKING_URI", f"sqlite:///{tmp_path / 'untouched.db'}")
    monkeypatch.setenv("RENTALSTREAM_DATA_DIR", str(data_dir))
    metrics = RetrainerMetrics()
    retrainer = Retrainer(Settings(_env_file=None), metrics)
    try:
        row = retrainer.look()
        assert row["status"] == "skipped" and row["model_version"] is None
        distinct = len(asked.drop_duplicates())
        assert row["detail"] == f"{distinct} distinct labelled price requests in the newest 5000; a retrain needs 200"
        assert metrics.retrains.labels("skipped")._value.get() == 1
        assert retrainer.look() is None  # answered: the same alert does not come back
    finally:
        retrainer.engine.dispose()
    assert not (tmp_path / "untouched.db").exists()  # nothing was registered anywhere
