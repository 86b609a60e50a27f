"""Model lifecycle on a running scorer: a challenger scored beside the champion, the
comparison `rentalstream compare` prints, a promotion in the middle of a replay, and the
bridge's live split between the two versions.

Real broker, Postgres and scorer process; the registry is a copy of the session's, so
moving its aliases leaves the other tests' champion alone. Every expected price comes
from LightGBM through plain pandas (``tests.helpers.reference_prices``).
"""

import asyncio
import json
import re
import threading
import time

import httpx
import lightgbm
import mlflow
import numpy as np
import pandas as pd
import pytest
from aiokafka import AIOKafkaProducer

from producers.replay import publish_events, rental_events
from rentalstream import processes, services
from runtime.registry import Registry
from schemas.topics import PRICE_REQUESTS
from tests.conftest import BRIDGE_API_KEY
from tests.helpers import (
    cli,
    interval_ratios,
    metric_samples,
    query,
    reference_prices,
    register_small_model,
    registry_copy,
    run_cli,
    service_process,
    wait_for,
)
from training.features import TARGET, build_features, read_pricing

pytestmark = pytest.mark.e2e
MODEL = "rentalstream-price"
REQUESTS = 400


@pytest.fixture
def registry(tmp_path, mlflow_registry, pricing_csv):
    """A copy of the session registry (v1 champion) plus a v2: a smaller LightGBM without
    an interval, so its prices differ from v1's and it is served without bounds."""
    training = mlflow_registry[1]
    copy = registry_copy(mlflow_registry, tmp_path)
    v2, small = register_small_model(copy, read_pricing(pricing_csv), "small", trees=40)
    assert v2 != training.champion_version
    champion = mlflow.lightgbm.load_model(f"models:/{MODEL}/{training.champion_version}")
    return copy, {training.champion_version: champion, v2: small}


async def publish_requests(bootstrap: str, rows: pd.DataFrame, prefix: str = "listing") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, row in enumerate(rows.to_dict("records")):
            listed = row.pop(TARGET)
            body = {"request_id": f"{prefix}-{i}", "car": row, "listed_price_per_day": listed, "client": "test"}
            await producer.send(PRICE_REQUESTS.name, json.dumps(body).encode(), key=body["request_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture
def lifecycle_env(scorer_env, registry):
    return {
        **scorer_env,
        "RENTALSTREAM_REGISTRY_TRACKING_URI": registry[0],
        "RENTALSTREAM_REGISTRY_POLL_SECONDS": "0.5",
        "RENTALSTREAM_SCORER_COMPILE_MODEL": "false",
    }


def test_challenger_is_scored_beside_the_champion_and_compared_on_true_prices(
    lifecycle_env, registry, clean_database, pricing_csv, mlflow_registry, tmp_path
):
    uri, models = registry
    champion_version = mlflow_registry[1].champion_version
    [challenger_version] = set(models) - {champion_version}
    assert f"@challenger: none -> v{challenger_version}" in cli(
        lifecycle_env, "promote", challenger_version, "--challenger"
    )

    pricing = read_pricing(pricing_csv).sample(REQUESTS, random_state=3).reset_index(drop=True)
    scorer_url = f"http://127.0.0.1:{lifecycle_env['RENTALSTREAM_SCORER_PORT']}"
    with service_process("scorer", lifecycle_env, tmp_path / "scorer.log") as scorer:
        asyncio.run(publish_requests(lifecycle_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], pricing))
        wait_for(
            lambda: len(query(clean_database, "SELECT price_id FROM prices")) >= REQUESTS,
            120,
            f"{REQUESTS} prices",
            scorer,
            tmp_path / "scorer.log",
        )
        # The challenge ends: the scorer drops the challenger and prices with the champion alone.
        assert f"@challenger (v{challenger_version}) removed" in cli(lifecycle_env, "end-challenge")
        wait_for(
            lambda: not any(metric_samples(scorer_url, "rentalstream_challenger_info").values()),
            60,
            "the scorer to drop the challenger",
            scorer,
            tmp_path / "scorer.log",
        )
        asyncio.run(publish_requests(lifecycle_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], pricing.head(50), "after"))
        wait_for(
            lambda: len(query(clean_database, "SELECT price_id FROM prices")) >= REQUESTS + 50,
            120,
            "the requests after the challenge",
            scorer,
            tmp_path / "scorer.log",
        )

    after = query(clean_database, "SELECT * FROM prices WHERE price_id LIKE 'after-%'")
    assert len(after) == 50 and (after.model_version == champion_version).all()
    assert after.challenger_model_version.isna().all() and after.challenger_price_per_day.isna().all()
    stored = query(clean_database, "SELECT * FROM prices WHERE price_id LIKE 'listing-%' ORDER BY price_id")
    stored = stored.set_index("price_id")
    ids = [f"listing-{i}" for i in range(REQUESTS)]
    stored = stored.loc[ids]
    cars = pricing.drop(columns=TARGET)
    champion_prices = np.round(reference_prices(models[champion_version], cars), 2)
    challenger_prices = np.round(reference_prices(models[challenger_version], cars), 2)
    assert (stored.model_version == champion_version).all()
    assert (stored.challenger_model_version == challenger_version).all()
    assert stored.price_per_day.to_numpy() == pytest.approx(champion_prices, abs=0.006)
    assert stored.challenger_price_per_day.to_numpy() == pytest.approx(challenger_prices, abs=0.006)
    low, high = interval_ratios(uri, champion_version)
    assert stored.price_lower.to_numpy() == pytest.approx(champion_prices * low, abs=0.011)
    assert stored.price_upper.to_numpy() == pytest.approx(champion_prices * high, abs=0.011)
    # Each price carries the error the champion's estimator, as logged, expects of it; the
    # small challenger was registered without an estimator.
    mlflow.set_tracking_uri(uri)
    run_id = mlflow.MlflowClient().get_model_version("rentalstream-price", champion_version).run_id
    estimator = lightgbm.Booster(model_str=mlflow.artifacts.load_text(f"runs:/{run_id}/error_model.txt"))
    estimates = estimator.predict(build_features(cars).assign(price_per_day=stored.price_per_day.to_numpy()))
    assert stored.estimated_error.to_numpy() == pytest.approx(np.maximum(estimates, 0), abs=0.006)
    assert stored.challenger_estimated_error.isna().all()

    # What `compare` prints, against numpy on the true prices.
    listed = pricing[TARGET].to_numpy()
    champion_error, challenger_error = np.abs(champion_prices - listed), np.abs(challenger_prices - listed)
    printed = cli(lifecycle_env, "compare")
    print(f"\n{printed}")  # shown with -s: the comparison as an operator sees it
    line = next(line for line in printed.splitlines() if line.strip().startswith(f"v{champion_version}"))
    assert f"{REQUESTS:,}" in line
    assert f"{np.mean(challenger_prices - champion_prices):+.2f}" in line
    assert f"{np.mean(np.abs(challenger_prices - champion_prices)):.2f}" in line
    assert f"{champion_error.mean():.2f}" in line and f"{challenger_error.mean():.2f}" in line
    closer = "champion" if champion_error.mean() < challenger_error.mean() else "challenger"
    assert f"{closer} closer" in line
    assert f"{(champion_error < challenger_error).sum():,} / {(challenger_error < champion_error).sum():,}" in line
    # ... and the paired evidence `promote --if-better` weighs: the same MAEs, their difference.
    assert (
        f"v{challenger_version} against v{champion_version} on {REQUESTS:,} true prices: MAE "
        f"{challenger_error.mean():.2f} € against {champion_error.mean():.2f} €, "
        f"difference {np.mean(challenger_error - champion_error):+.2f} €"
    ) in printed
    # ... and how often the served interval held the true price (the stored bounds, as numpy
    # sees them), over every priced request, those after the challenge included.
    every = pd.concat([stored.reset_index(), after])
    true_of = {f"{prefix}-{i}": price for prefix in ("listing", "after") for i, price in enumerate(pricing[TARGET])}
    true = every.price_id.map(true_of).to_numpy()
    inside = ((true >= every.price_lower.to_numpy()) & (true <= every.price_upper.to_numpy())).mean()
    assert f"{inside:.1%}" in printed.split("price interval on true prices")[1]

    # What drives each version's prices: the champion's importance as logged at its training,
    # the small challenger registered without one, and a version that does not exist.
    mlflow.set_tracking_uri(uri)
    run_id = mlflow.MlflowClient().get_model_version("rentalstream-price", champion_version).run_id
    logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/importance.json")
    for feature, euros in logged.items():
        assert re.search(rf"^\s*{feature}\s+{euros:.2f}\s*$", printed, re.MULTILINE), (feature, printed)
    both = cli(lifecycle_env, "compare", "--version", champion_version, "--version", challenger_version)
    top = next(iter(logged))
    assert re.search(rf"^\s*{top}\s+{logged[top]:.2f}\s+not logged\s*$", both, re.MULTILINE), both
    unknown = run_cli(lifecycle_env, "compare", "--version", "999")
    assert unknown.returncode == 2 and "rentalstream-price has no version '999'" in unknown.stdout


def test_promotion_during_a_replay_switches_versions_at_one_point_and_loses_nothing(
    lifecycle_env, registry, clean_database, delays_xlsx, pricing_csv, mlflow_registry, tmp_path
):
    uri, models = registry
    old = mlflow_registry[1].champion_version
    [new] = set(models) - {old}
    events = rental_events(delays_xlsx, pricing_csv)
    rentals = len(events)

    log = tmp_path / "scorer.log"
    with service_process("scorer", lifecycle_env, log) as scorer:
        ready = f"http://127.0.0.1:{lifecycle_env['RENTALSTREAM_SCORER_PORT']}/ready"
        services.wait_ready("scorer", ready, scorer.pid, time.monotonic() + 120, str(log))
        # Paced (~21 s), so the promotion lands in the middle of the stream, not after it.
        replay = threading.Thread(
            target=lambda: asyncio.run(
                publish_events(lifecycle_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], events, rate=1_000)
            )
        )
        replay.start()
        try:
            wait_for(
                lambda: len(query(clean_database, "SELECT 1 FROM prices")) >= rentals // 4,
                120,
                "a quarter of the replay scored",
                scorer,
                log,
            )
            # Through the registry's API, not the CLI: on a slow day the CLI's MLflow import
            # alone took longer than the rest of the replay (the CLI's promote is tested in
            # tests/integration/test_cli.py).
            before, after = Registry(uri, MODEL).promote(new, "champion", "challenger")
            assert (before["champion"], after["champion"]) == (old, new)
        finally:
            replay.join()
        wait_for(
            lambda: len(query(clean_database, "SELECT 1 FROM prices")) >= rentals,
            180,
            f"all {rentals:,} rentals priced",
            scorer,
            log,
        )

    scored = query(
        clean_database,
        """
        SELECT p.rental_id, p.price_per_day, p.price_lower, p.model_version, p.scored_at,
               r.kafka_partition, r.kafka_offset
        FROM prices p JOIN rentals r USING (rental_id)
    """,
    )
    assert len(scored) == rentals == scored.rental_id.nunique()
    assert len(query(clean_database, "SELECT 1 FROM dead_letters")) == 0
    counts = scored.model_version.value_counts().to_dict()
    assert set(counts) == {old, new}, counts

    # One switch: in each partition, offsets scored by the old version all come before the new.
    for partition, rows in scored.sort_values("kafka_offset").groupby("kafka_partition"):
        versions = rows.model_version.tolist()
        switch = versions.index(new) if new in versions else len(versions)
        assert versions == [old] * switch + [new] * (len(versions) - switch), f"partition {partition}"
    by_version = scored.groupby("model_version").scored_at.agg(["min", "max"])
    assert by_version.loc[old, "max"] <= by_version.loc[new, "min"]
    # v1 was trained with an interval, v2 without one: bounds exactly where the version has them.
    assert scored.loc[scored.model_version == old, "price_lower"].notna().all()
    assert scored.loc[scored.model_version == new, "price_lower"].isna().all()

    # Each price is exactly what the version it names says: no half-loaded model.
    cars = pd.DataFrame([e.car.model_dump() for e in events], index=[e.rental_id for e in events])
    scored = scored.set_index("rental_id")
    for version, model in models.items():
        mine = scored[scored.model_version == version]
        expected = np.round(reference_prices(model, cars.loc[mine.index]), 2)
        assert mine.price_per_day.to_numpy() == pytest.approx(expected, abs=0.006), f"v{version}"
    print(
        f"\nreload: {counts[old]:,} rentals priced by v{old}, then {counts[new]:,} by v{new}; {rentals:,} of {rentals:,} stored"
    )


SPLIT_CLIENTS = 200
SPLIT_SHARE = 0.3


def test_the_live_split_answers_a_share_of_clients_with_the_challenger_and_each_always_with_the_same(
    lifecycle_env, registry, clean_database, pricing_csv, mlflow_registry, tmp_path
):
    """RENTALSTREAM_BRIDGE_CHALLENGER_SHARE=0.3: each of 200 clients asks twice through the
    real bridge; about 30% of them (within binomial noise) get the challenger's price, each
    client the same version both times, every price that version's, and both versions are
    stored for every request."""
    _, models = registry
    champion_version = mlflow_registry[1].champion_version
    [challenger_version] = set(models) - {champion_version}
    cli(lifecycle_env, "promote", challenger_version, "--challenger")
    env = {
        **lifecycle_env,
        "RENTALSTREAM_BRIDGE_PORT": str(processes.free_port()),
        "RENTALSTREAM_BRIDGE_API_KEY": BRIDGE_API_KEY,
        "RENTALSTREAM_BRIDGE_TIMEOUT_SECONDS": "10",
        "RENTALSTREAM_BRIDGE_CHALLENGER_SHARE": str(SPLIT_SHARE),
    }
    pricing = read_pricing(pricing_csv).sample(SPLIT_CLIENTS, random_state=5).reset_index(drop=True)
    cars = pricing.drop(columns=TARGET)
    bridge_url = f"http://127.0.0.1:{env['RENTALSTREAM_BRIDGE_PORT']}"
    scorer_url = f"http://127.0.0.1:{env['RENTALSTREAM_SCORER_PORT']}"
    answers = {}
    with (
        service_process("scorer", env, tmp_path / "scorer.log") as scorer,
        service_process("bridge", env, tmp_path / "bridge.log") as bridge,
    ):
        services.wait_ready(
            "scorer", f"{scorer_url}/ready", scorer.pid, time.monotonic() + 120, str(tmp_path / "scorer.log")
        )
        wait_for(
            lambda: any(metric_samples(scorer_url, "rentalstream_challenger_info").values()),
            120,
            "the scorer to load the challenger",
            scorer,
            tmp_path / "scorer.log",
        )
        services.wait_ready(
            "bridge", f"{bridge_url}/ready", bridge.pid, time.monotonic() + 120, str(tmp_path / "bridge.log")
        )
        with httpx.Client(base_url=bridge_url, timeout=15) as http:
            for i, car in enumerate(cars.to_dict("records")):
                client = f"client-{i}"
                replies = [
                    http.post("/predict", json=car, headers={"X-API-Key": BRIDGE_API_KEY, "X-Client-Id": client})
                    for _ in range(2)
                ]
                assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
                answers[client] = [r.json() for r in replies]
        counted = metric_samples(bridge_url, "rentalstream_bridge_answers_total")

    # Sticky: each client got one version, both times.
    version_of = {}
    for client, (first, second) in answers.items():
        assert first["model_version"] == second["model_version"], client
        version_of[client] = first["model_version"]
    assert set(version_of.values()) <= {champion_version, challenger_version}
    # The share, within 4 standard deviations of a binomial draw of 200 clients (±0.13).
    share = sum(v == challenger_version for v in version_of.values()) / SPLIT_CLIENTS
    noise = 4 * np.sqrt(SPLIT_SHARE * (1 - SPLIT_SHARE) / SPLIT_CLIENTS)
    assert abs(share - SPLIT_SHARE) <= noise, (share, noise)
    print(
        f"\nlive split: {share:.1%} of {SPLIT_CLIENTS} clients answered by v{challenger_version} (set: {SPLIT_SHARE:.0%})"
    )

    # Each answer is the price of the version it names (LightGBM through pandas, not our code);
    # the small challenger was registered without an interval, so its answers carry none.
    expected = {v: np.round(reference_prices(model, cars), 2) for v, model in models.items()}
    for i in range(SPLIT_CLIENTS):
        answer = answers[f"client-{i}"][0]
        assert answer["price_per_day"] == pytest.approx(expected[answer["model_version"]][i], abs=0.006)
        assert (answer["price_lower"] is None) == (answer["model_version"] == challenger_version)
    assert counted == {
        (("model_version", v),): 2.0 * sum(x == v for x in version_of.values()) for v in set(version_of.values())
    }

    # Stored: both versions priced every request; the request log says whose price was given.
    stored = query(
        clean_database,
        "SELECT p.model_version, p.challenger_model_version, p.challenger_price_per_day, p.answered_with_version,"
        " r.client FROM prices p JOIN price_requests r USING (request_id)",
    )
    assert len(stored) == 2 * SPLIT_CLIENTS
    assert (stored.model_version == champion_version).all()
    assert (stored.challenger_model_version == challenger_version).all()
    assert stored.challenger_price_per_day.notna().all()
    assert (stored.answered_with_version == stored.client.map(version_of)).all()
