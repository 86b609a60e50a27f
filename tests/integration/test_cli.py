"""The command line as a user runs it: `python -m rentalstream.cli` (the `rentalstream`
entry point, `run()` and its exit codes included) in a clean environment, against a real
broker, PostgreSQL and MLflow registry. What each command did is read back from those,
not from the command's own words only."""

import asyncio
import ipaddress
import json
import os
import socket
import subprocess
from datetime import UTC, datetime

import mlflow
import numpy as np
import psutil
import pytest
from mlflow import MlflowClient
from sqlalchemy import create_engine, inspect, text

from rentalstream import processes
from runtime.settings import normalised_database_url
from schemas import tables
from schemas.topics import CATALOGUE
from tests.conftest import DEFAULT_DATA_DIR
from tests.helpers import (
    log_end,
    partition_counts,
    register_small_model,
    registry_copy,
    run_cli,
    service_process,
    wait_for,
)
from training.features import read_pricing

pytestmark = pytest.mark.integration
MODEL = "rentalstream-price"


def rentalstream(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """One command, as typed in a shell whose only rentalstream settings are ``env``."""
    base = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ["HOME"],
        "RENTALSTREAM_DATA_DIR": os.environ.get("RENTALSTREAM_DATA_DIR", str(DEFAULT_DATA_DIR)),
        "RENTALSTREAM_SCORER_MODEL_CACHE_DIR": os.environ[
            "RENTALSTREAM_SCORER_MODEL_CACHE_DIR"
        ],  # the session's (conftest)
    }
    return run_cli({**base, **env}, *args, timeout=timeout)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def registry(tmp_path, mlflow_registry, pricing_csv) -> tuple[str, str, str]:
    """A copy of the session's registry (v1, the champion) with a v2 of another model:
    (tracking URI, v1, v2)."""
    copy = registry_copy(mlflow_registry, tmp_path)
    v2, _ = register_small_model(copy, read_pricing(pricing_csv), "v2", trees=20)
    return copy, mlflow_registry[1].champion_version, v2


def aliases(uri: str) -> dict[str, str]:
    mlflow.set_tracking_uri(uri)
    return {alias: str(version) for alias, version in MlflowClient().get_registered_model(MODEL).aliases.items()}


def test_challenger_commands_move_only_the_aliases_they_name(registry, tmp_path):
    uri, v1, v2 = registry
    env = {"RENTALSTREAM_REGISTRY_TRACKING_URI": uri, "RENTALSTREAM_HOME": str(tmp_path / "home")}

    unknown = rentalstream(env, "promote", "999")
    assert unknown.returncode == 2
    assert f"{MODEL} has no version '999'" in unknown.stdout and f"versions: {v2}, {v1}" in unknown.stdout
    assert aliases(uri) == {"champion": v1}

    assert f"{MODEL}@challenger: none -> v{v2}" in ok(rentalstream(env, "promote", v2, "--challenger"))
    assert aliases(uri) == {"champion": v1, "challenger": v2}
    assert f"{MODEL}@challenger (v{v2}) removed" in ok(rentalstream(env, "end-challenge"))
    assert aliases(uri) == {"champion": v1}
    assert f"{MODEL} has no @challenger; nothing to do" in ok(rentalstream(env, "end-challenge"))

    # Promoting the challenger's version to champion ends the challenge.
    ok(rentalstream(env, "promote", v2, "--challenger"))
    promoted = ok(rentalstream(env, "promote", v2))
    assert f"{MODEL}@champion: v{v1} -> v{v2}" in promoted and f"{MODEL}@challenger: v{v2} -> none" in promoted
    assert aliases(uri) == {"champion": v2}


def store_prices(database_url: str, rows: list[dict]) -> None:
    """Replace the ``prices`` table's rows with ``rows`` (columns as named; the rest as a
    price request's defaults)."""
    defaults = {"unknown_fields": [], "model_name": MODEL}
    now = datetime.now(UTC)
    engine = create_engine(normalised_database_url(database_url))
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE prices"))
        conn.execute(
            tables.prices.insert(),
            [{**defaults, "event_time": now, "scored_at": now, "request_id": r["price_id"], **r} for r in rows],
        )
    engine.dispose()


def store_paired_prices(database_url: str, champion: str, challenger: str, champion_errors, challenger_errors) -> None:
    """Price requests both versions priced, with their true price: each version's price is
    the true price plus (or minus, alternately) its error."""
    signs = np.where(np.arange(len(champion_errors)) % 2 == 0, 1.0, -1.0)
    store_prices(
        database_url,
        [
            {
                "price_id": f"req-{i}",
                "price_per_day": 150.0 + sign * a,
                "listed_price_per_day": 150.0,
                "model_version": champion,
                "challenger_model_version": challenger,
                "challenger_price_per_day": 150.0 - sign * b,
            }
            for i, (sign, a, b) in enumerate(zip(signs, champion_errors, challenger_errors, strict=True))
        ],
    )


def test_promote_if_better_moves_the_champion_only_on_evidence_and_logs_each_decision(
    registry, clean_database, tmp_path
):
    uri, v1, v2 = registry
    env = {
        "RENTALSTREAM_REGISTRY_TRACKING_URI": uri,
        "RENTALSTREAM_HOME": str(tmp_path / "home"),
        "RENTALSTREAM_DATABASE_URL": clean_database,
    }
    ok(rentalstream(env, "promote", v2, "--challenger"))
    rng = np.random.default_rng(23)
    champion_errors = np.round(np.abs(rng.normal(0, 12, 300)), 2)

    # As close as the champion, give or take: the interval holds zero, so v1 stays.
    same = np.round(np.abs(champion_errors + rng.normal(0, 3, 300)), 2)
    store_paired_prices(clean_database, v1, v2, champion_errors, same)
    refused = rentalstream(env, "promote", v2, "--if-better")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"refused: {MODEL}@champion stays v{v1}" in refused.stdout
    assert f"on 300 true prices: MAE {same.mean():.2f} € against {champion_errors.mean():.2f} €" in refused.stdout
    assert f"difference {np.mean(same - champion_errors):+.2f} €" in refused.stdout
    assert aliases(uri) == {"champion": v1, "challenger": v2}

    # Two euros closer on every car, give or take: promoted.
    closer = np.round(np.maximum(champion_errors - 2 + rng.normal(0, 1, 300), 0), 2)
    store_paired_prices(clean_database, v1, v2, champion_errors, closer)
    promoted = ok(rentalstream(env, "promote", v2, "--if-better"))
    assert "the challenger is better" in promoted and f"{MODEL}@champion: v{v1} -> v{v2}" in promoted
    assert aliases(uri) == {"champion": v2}

    # Both decisions are runs of their own in MLflow, with the figures; the version says the last.
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"{MODEL}-promotions")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.data.params["decision"] for r in runs] == ["refused", "promoted"]
    assert [r.data.params["verdict"] for r in runs] == [
        "no difference shown: the interval holds zero",
        "the challenger is better",
    ]
    for run, challenger_errors in zip(runs, (same, closer), strict=True):
        assert run.data.params["challenger_version"] == v2 and run.data.params["champion_version"] == v1
        assert run.data.params["basis"] == "true prices"
        assert run.data.metrics["pairs"] == 300
        assert run.data.metrics["mean_difference"] == pytest.approx(np.mean(challenger_errors - champion_errors))
        assert run.data.metrics["low"] <= run.data.metrics["mean_difference"] <= run.data.metrics["high"]
    assert runs[1].data.metrics["high"] < 0 < runs[0].data.metrics["high"]
    tags = client.get_model_version(MODEL, v2).tags
    assert tags["promotion_decision"] == "promoted" and tags["promotion_run_id"] == runs[1].info.run_id


def store_estimated_errors(database_url: str, champion: str, challenger: str, champion_errors, challenger_errors):
    """Price requests both versions priced, without a true price: each carries the error
    each version's estimator expected of its price."""
    store_prices(
        database_url,
        [
            {
                "price_id": f"req-{i}",
                "price_per_day": 150.0,
                "model_version": champion,
                "challenger_model_version": challenger,
                "challenger_price_per_day": 151.0,
                "estimated_error": float(a),
                "challenger_estimated_error": float(b),
            }
            for i, (a, b) in enumerate(zip(champion_errors, challenger_errors, strict=True))
        ],
    )


def test_promote_if_better_without_true_prices_decides_on_the_estimated_errors_and_says_so(
    registry, clean_database, tmp_path
):
    uri, v1, v2 = registry
    env = {
        "RENTALSTREAM_REGISTRY_TRACKING_URI": uri,
        "RENTALSTREAM_HOME": str(tmp_path / "home"),
        "RENTALSTREAM_DATABASE_URL": clean_database,
    }
    ok(rentalstream(env, "promote", v2, "--challenger"))
    rng = np.random.default_rng(5)
    champion_estimates = np.round(rng.uniform(6, 14, 200), 2)
    challenger_estimates = np.round(champion_estimates - 1.5 + rng.normal(0, 0.5, 200), 2)
    store_estimated_errors(clean_database, v1, v2, champion_estimates, challenger_estimates)

    promoted = ok(rentalstream(env, "promote", v2, "--if-better"))
    assert "not enough evidence: 0 paired true prices, 30 needed" in promoted
    assert (
        f"decided on: v{v2} against v{v1} on 200 estimated errors: MAE {challenger_estimates.mean():.2f} € "
        f"against {champion_estimates.mean():.2f} €" in " ".join(promoted.split())
    )
    assert aliases(uri) == {"champion": v2}
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name(f"{MODEL}-promotions").experiment_id])
    assert run.data.params["basis"] == "estimated errors" and run.data.params["decision"] == "promoted"
    assert run.data.metrics["mean_difference"] == pytest.approx(np.mean(challenger_estimates - champion_estimates))


def test_train_as_challenger_registers_a_version_and_leaves_the_champion(registry, tmp_path):
    uri, v1, v2 = registry
    env = {"RENTALSTREAM_REGISTRY_TRACKING_URI": uri, "RENTALSTREAM_HOME": str(tmp_path / "home")}
    trained = ok(rentalstream(env, "train", "--challenger"))
    v3 = str(int(v2) + 1)
    assert "5-fold cross-validated error (mean over folds)" in trained and "lightgbm" in trained
    assert f"registered {MODEL} v{v3}; set as @challenger; champion stays @champion = v{v1}" in trained
    assert aliases(uri) == {"champion": v1, "challenger": v3}
    assert f"registry already has {MODEL}@champion; not training" in ok(rentalstream(env, "train", "--if-no-champion"))


def test_a_command_that_needs_the_stack_exits_2_saying_what_to_run(tmp_path):
    done = rentalstream({"RENTALSTREAM_HOME": str(tmp_path / "empty")}, "replay", "--limit", "1", timeout=60)
    assert done.returncode == 2
    assert "rentalstream up" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_up_exits_2_with_the_log_of_a_service_that_could_not_start_and_leaves_nothing_running(
    registry, kafka_bootstrap, clean_database, tmp_path
):
    home = tmp_path / "home"
    env = {
        "RENTALSTREAM_HOME": str(home),
        "RENTALSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "RENTALSTREAM_DATABASE_URL": clean_database,
        "RENTALSTREAM_REGISTRY_TRACKING_URI": registry[0],
        **{f"RENTALSTREAM_{s}_PORT": str(processes.free_port()) for s in ("SCORER", "BRIDGE", "MONITOR")},
    }
    with socket.create_server(("127.0.0.1", int(env["RENTALSTREAM_SCORER_PORT"]))):  # the scorer's port is taken
        done = rentalstream(env, "up")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the scorer exited at start; its log:" in done.stdout
    assert "address already in use" in done.stdout.lower()
    # The bridge and monitor it had started are stopped again.
    for port in (env["RENTALSTREAM_BRIDGE_PORT"], env["RENTALSTREAM_MONITOR_PORT"]):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()


def test_replay_and_simulate_publish_what_they_say_and_refuse_a_bad_shift(kafka_bootstrap, tmp_path):
    env = {"RENTALSTREAM_HOME": str(tmp_path / "home"), "RENTALSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap}

    def on_topic(topic: str) -> int:
        return asyncio.run(log_end(kafka_bootstrap, topic))

    assert "published 500 events" in ok(rentalstream(env, "replay", "--limit", "500"))
    assert on_topic("rentals") == 500
    # 400 events, a quarter of them price requests, spread evenly: 100 requests, 300 rentals.
    simulated = ok(rentalstream(env, "simulate", "--events", "400", "--price-request-share", "0.25", "--rate", "2000"))
    assert "published 400 events" in simulated and "25% price requests" in simulated
    assert (on_topic("rentals"), on_topic("price-requests")) == (800, 100)
    # Stopped by the clock: whatever it says it published is on the topics.
    timed = ok(rentalstream(env, "simulate", "--seconds", "1", "--rate", "100", "--price-request-share", "0"))
    published = int(timed.split("published ")[1].split(" events")[0])
    assert 0 < published and on_topic("rentals") == 800 + published

    bad = rentalstream(env, "simulate", "--events", "1", "--shift", "mileage=banana")
    assert bad.returncode == 2 and "--shift" in bad.stderr
    assert on_topic("rentals") == 800 + published  # nothing published


def test_db_upgrade_creates_every_table_of_an_empty_database_then_finds_them(database_url, tmp_path):
    engine = create_engine(normalised_database_url(database_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS cli_upgrade"))
        conn.execute(text("CREATE DATABASE cli_upgrade"))
    engine.dispose()
    empty = database_url.rsplit("/", 1)[0] + "/cli_upgrade"
    env = {"RENTALSTREAM_HOME": str(tmp_path / "home"), "RENTALSTREAM_DATABASE_URL": empty}
    created = ok(rentalstream(env, "db", "upgrade"))
    engine = create_engine(normalised_database_url(empty))
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"cars", "rentals", "prices", "price_requests", "delays", "dead_letters", "drift_events"} <= tables
    assert all(table in created for table in tables - {"alembic_version"})
    assert "tables and columns created: none (all present)" in ok(rentalstream(env, "db", "upgrade"))


def test_up_without_services_starts_the_servers_on_loopback_only_and_down_stops_them(tmp_path):
    env = {"RENTALSTREAM_HOME": str(tmp_path / "home"), "RENTALSTREAM_KAFKA_TOPIC_PARTITIONS": "5"}
    stack_file = tmp_path / "home" / "stack.json"
    try:
        shown = ok(rentalstream(env, "up", "--no-services"))
        state = json.loads(stack_file.read_text())
        pids = state["pids"]
        assert set(pids) == {"broker", "postgres"}
        assert not state.get("services")
        assert "Apache Kafka 4.4.0" in shown and "rentals (5)" in shown
        assert asyncio.run(partition_counts(state["kafka_bootstrap"])) == {t.name: 5 for t in CATALOGUE}
        engine = create_engine(normalised_database_url(state["database_url"]))
        assert {"cars", "rentals", "prices", "delays", "dead_letters"} <= set(inspect(engine).get_table_names())
        engine.dispose()
        # Every socket the servers listen on is on loopback, as the operating system says.
        for name, pid in pids.items():
            assert listening_addresses(pid) == {"127.0.0.1"}, f"the {name} listens on {listening_addresses(pid)}"
        ok(rentalstream(env, "up", "--no-services"))
        assert json.loads(stack_file.read_text())["pids"] == state["pids"]  # idempotent: nothing restarted
    finally:
        stopped = rentalstream(env, "down")
    assert "stopped: postgres, broker" in ok(stopped)
    assert not any(processes.alive(pid) for pid in pids.values())
    assert not stack_file.exists()


def listening_addresses(pid: int) -> set[str]:
    """The IPv4 addresses ``pid`` (and its children) accept connections on; an IPv6
    socket bound to an IPv4 address (Java binds ``::ffff:127.0.0.1``) counts as that."""
    process = psutil.Process(pid)
    addresses = {
        ipaddress.ip_address(c.laddr.ip)
        for p in [process, *process.children(recursive=True)]
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    return {str(getattr(a, "ipv4_mapped", None) or a) for a in addresses}


def test_probe_answers_for_each_service_as_compose_healthchecks_ask(
    scorer_process, bridge_env, bridge_url, monitor_env, monitor_process, tmp_path
):
    env = {
        **{k: v for k, v in monitor_env.items() if k.startswith("RENTALSTREAM_")},
        "RENTALSTREAM_BRIDGE_PORT": bridge_env["RENTALSTREAM_BRIDGE_PORT"],
        "RENTALSTREAM_DASHBOARD_PORT": str(processes.free_port()),
    }
    dashboard_log = tmp_path / "dashboard.log"
    with service_process("dashboard", {**os.environ, **env}, dashboard_log):
        for service in ("scorer", "bridge", "monitor", "dashboard"):
            wait_for(
                lambda s=service: rentalstream(env, "probe", s, timeout=60).returncode == 0,
                120,
                f"`rentalstream probe {service}` to pass",
                log=dashboard_log,
            )
            assert rentalstream(env, "probe", "--live", service, timeout=60).returncode == 0
    stopped = rentalstream(env, "probe", "--live", "dashboard", timeout=60)
    assert stopped.returncode == 1 and "ConnectError" in stopped.stdout  # not running any more: unhealthy
    unknown = rentalstream(env, "probe", "kafka", timeout=60)
    assert unknown.returncode == 2 and "one of scorer, bridge, monitor, dashboard" in unknown.stderr
