"""The drift monitor across a promotion, a rollback, and a version trained without
reference statistics, on the real broker, Postgres, scorer and monitor.

Registry: a copy of the session's (v1, the champion), plus v2 (another model, logged
with v1's reference) and v3 (another model, with no reference, like a version trained
before the monitor existed). Rentals are published in four rounds, the champion moved
between them with `rentalstream promote`.
"""

import asyncio
import time

import mlflow
import pytest

from producers.replay import publish_events, rental_events
from rentalstream import services
from schemas.reference import REFERENCE_ARTIFACT
from tests.helpers import cli, metric_samples, query, register_small_model, registry_copy, service_process, wait_for
from training.features import read_pricing

pytestmark = pytest.mark.e2e
MODEL = "rentalstream-price"
ROUND = 400  # rentals per round


@pytest.fixture
def versions(tmp_path, mlflow_registry, pricing_csv) -> tuple[str, dict[str, str]]:
    """The registry copy's URI, and {"v1" | "v2" | "v3": its version}."""
    copy = registry_copy(mlflow_registry, tmp_path)
    v1 = mlflow_registry[1].champion_version
    mlflow.set_tracking_uri(copy)
    v1_run = mlflow.MlflowClient().get_model_version(MODEL, v1).run_id
    reference = mlflow.artifacts.load_dict(f"runs:/{v1_run}/{REFERENCE_ARTIFACT}")
    pricing = read_pricing(pricing_csv)
    v2, _ = register_small_model(copy, pricing, "v2", artifacts={REFERENCE_ARTIFACT: reference})
    v3, _ = register_small_model(copy, pricing, "v3", leaves=4)  # no reference
    return copy, {"v1": v1, "v2": v2, "v3": v3}


def serving(scorer_url: str) -> set[str]:
    """The versions the scorer says it prices with."""
    return {
        dict(labels)["version"]
        for labels, value in metric_samples(scorer_url, "rentalstream_model_info").items()
        if value == 1
    }


def prices_observed(monitor_url: str) -> float:
    return metric_samples(monitor_url, "rentalstream_monitor_events_total").get((("topic", "prices"),), 0.0)


def prices_lag(monitor_url: str) -> float:
    return sum(
        v
        for labels, v in metric_samples(monitor_url, "rentalstream_consumer_lag").items()
        if ("topic", "prices") in labels
    )


def test_the_monitor_follows_promotion_and_rollback_and_keeps_going_on_a_version_without_reference(
    monitor_env, versions, clean_database, delays_xlsx, pricing_csv, tmp_path
):
    uri, v = versions
    env = {
        **monitor_env,
        "RENTALSTREAM_REGISTRY_TRACKING_URI": uri,
        "RENTALSTREAM_REGISTRY_POLL_SECONDS": "0.5",
        "RENTALSTREAM_SCORER_COMPILE_MODEL": "false",
    }
    scorer_url = f"http://127.0.0.1:{env['RENTALSTREAM_SCORER_PORT']}"
    monitor_url = f"http://127.0.0.1:{env['RENTALSTREAM_MONITOR_PORT']}"
    events = rental_events(delays_xlsx, pricing_csv)
    monitor_log = tmp_path / "monitor.log"
    rounds = [(None, "v1"), ("v2", "v2"), ("v1", "v1"), ("v3", "v1")]  # (promoted, whose reference after)
    with (
        service_process("scorer", env, tmp_path / "scorer.log") as scorer,
        service_process("monitor", env, monitor_log) as monitor,
    ):
        services.wait_ready("scorer", f"{scorer_url}/ready", scorer.pid, time.monotonic() + 120)
        services.wait_ready("monitor", f"{monitor_url}/ready", monitor.pid, time.monotonic() + 120)
        for number, (promoted, reference) in enumerate(rounds):
            if promoted is not None:
                cli(env, "promote", v[promoted])
                version = v[promoted]
                wait_for(lambda: serving(scorer_url) == {version}, 60, f"the scorer serving v{version}", scorer)  # noqa: B023
            chunk = events[number * ROUND : (number + 1) * ROUND]
            asyncio.run(publish_events(env["RENTALSTREAM_KAFKA_BOOTSTRAP"], chunk))
            published = (number + 1) * ROUND
            # Each price observed once and its offset committed: a batch failing over and
            # over would keep the count climbing or the lag above 0.
            wait_for(
                lambda: prices_observed(monitor_url) >= published and prices_lag(monitor_url) == 0,  # noqa: B023
                120,
                f"the monitor to observe round {number + 1}",
                monitor,
                monitor_log,
            )
            assert prices_observed(monitor_url) == published
            priced_by = query(
                clean_database,
                f"SELECT DISTINCT model_version FROM prices WHERE rental_id IN "
                f"({','.join(str(e.rental_id) for e in chunk)})",
            )
            assert priced_by.model_version.tolist() == [v[promoted or "v1"]]
            gauge = metric_samples(monitor_url, "rentalstream_monitor_reference_version")[()]
            assert str(int(gauge)) == v[reference], f"round {number + 1}: reference of v{int(gauge)}"
    assert f"{MODEL} v{v['v3']} has no {REFERENCE_ARTIFACT}" in monitor_log.read_text()
