"""The loop closed, on the real stack: labelled price requests whose true prices moved by
+30% → scorer → monitor (an alert of the realised MAE) → retrainer (one retrain on the
reference and the moved labels, into @challenger) → scorer (both versions price new
requests) → `rentalstream promote --if-better` (the paired evidence promotes it).

Real broker, Postgres, registry (a copy of the session's) and service processes, each
service as its database role. The requests after the retrain are for listings the
retrain never saw moved; whether the challenger prices them better is computed from the
stored prices and the true ones, not taken from the retrainer or `compare`.
"""

import asyncio
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from rentalstream import processes, services
from runtime.compiled_trees import platform_folder
from runtime.postgres import roles
from tests.conftest import as_role
from tests.e2e.test_model_lifecycle import publish_requests
from tests.helpers import cli, metric_samples, query, registry_copy, run_cli, service_process, wait_for
from training.features import TARGET, read_pricing

pytestmark = pytest.mark.e2e
SHIFT = 1.3
BEFORE, AFTER = 600, 400  # labelled requests before the retrain, and after it on other listings
MAE_WINDOW = 200


@pytest.fixture
def loop_env(scorer_env, mlflow_registry, tmp_path):
    return {
        **scorer_env,
        "RENTALSTREAM_REGISTRY_TRACKING_URI": registry_copy(mlflow_registry, tmp_path),
        "RENTALSTREAM_REGISTRY_POLL_SECONDS": "0.5",
        "RENTALSTREAM_SCORER_COMPILE_MODEL": "false",
        "RENTALSTREAM_MONITOR_PORT": str(processes.free_port()),
        "RENTALSTREAM_MONITOR_STATE_SECONDS": "0.5",
        "RENTALSTREAM_MONITOR_MAE_WINDOW": str(MAE_WINDOW),
        "RENTALSTREAM_RETRAIN": "challenger",
        "RENTALSTREAM_RETRAINER_PORT": str(processes.free_port()),
        "RENTALSTREAM_RETRAINER_POLL_SECONDS": "0.5",
        "RENTALSTREAM_RETRAINER_MIN_RECENT": "300",
    }


def as_service(env, role):
    return {**env, "RENTALSTREAM_DATABASE_URL": as_role(env["RENTALSTREAM_DATABASE_URL"], role)}


def moved(rows):
    rows = rows.copy()
    rows[TARGET] = (rows[TARGET] * SHIFT).round(2)
    return rows


def test_a_moved_world_is_retrained_into_a_challenger_that_wins_on_evidence_and_is_promoted(
    loop_env, clean_database, pricing_csv, mlflow_registry, tmp_path
):
    pricing = read_pricing(pricing_csv)
    order = np.random.default_rng(11).permutation(len(pricing))
    before = moved(pricing.iloc[order[:BEFORE]]).reset_index(drop=True)
    after = moved(pricing.iloc[order[BEFORE : BEFORE + AFTER]]).reset_index(drop=True)
    bootstrap, db = loop_env["RENTALSTREAM_KAFKA_BOOTSTRAP"], clean_database
    champion = mlflow_registry[1].champion_version
    urls = {
        name: f"http://127.0.0.1:{loop_env[f'RENTALSTREAM_{name.upper()}_PORT']}" for name in ("monitor", "retrainer")
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("scorer", "monitor", "retrainer")}

    with (
        service_process("scorer", as_service(loop_env, roles.SCORER), logs["scorer"]) as scorer,
        service_process("monitor", as_service(loop_env, roles.MONITOR), logs["monitor"]) as monitor,
    ):
        services.wait_ready(
            "monitor", f"{urls['monitor']}/ready", monitor.pid, time.monotonic() + 120, str(logs["monitor"])
        )
        asyncio.run(publish_requests(bootstrap, before, prefix="before"))
        wait_for(
            lambda: len(query(db, "SELECT 1 FROM prices WHERE listed_price_per_day IS NOT NULL")) == BEFORE,
            120,
            f"{BEFORE} labelled prices",
            scorer,
            logs["scorer"],
        )
        alert = wait_for(
            lambda: query(
                db, "SELECT alert_id FROM drift_events WHERE signal = 'prices/absolute_error' AND state = 'drifting'"
            ).alert_id.tolist(),
            120,
            "the monitor's MAE alert",
            monitor,
            logs["monitor"],
        )

        # The retrainer starts after the alert, as one back from a restart would: it answers it.
        # Where scorers compile their trees, it registers the challenger's compiled, for them.
        retrainer_env = {
            **as_service(loop_env, roles.RETRAINER),
            "RENTALSTREAM_SCORER_COMPILE_MODEL": "true",
            "RENTALSTREAM_SCORER_MODEL_CACHE_DIR": str(tmp_path / "retrainer-cache"),
        }
        with service_process("retrainer", retrainer_env, logs["retrainer"]) as retrainer:
            services.wait_ready(
                "retrainer", f"{urls['retrainer']}/ready", retrainer.pid, time.monotonic() + 60, str(logs["retrainer"])
            )
            done = wait_for(
                lambda: query(db, "SELECT * FROM retrains WHERE status <> 'running'").to_dict("records"),
                300,
                "the retrain to end",
                retrainer,
                logs["retrainer"],
            )
            [row] = done
            assert (row["alert_id"], row["reason"], row["status"]) == (alert[0], "error", "registered"), row
            assert (row["recent_rows"], row["reference_rows"]) == (before.drop_duplicates().shape[0], len(pricing))
            counts = metric_samples(urls["retrainer"], "rentalstream_retrains_total")
            assert counts == {(("status", "registered"),): 1.0}
            assert metric_samples(urls["retrainer"], "rentalstream_retrain_in_flight") == {(): 0.0}
            time.sleep(2)  # four more looks at the same alert: none starts another retrain
            assert len(query(db, "SELECT 1 FROM retrains")) == 1
            listed = cli(loop_env, "retrains")
            assert "prices/absolute_error" in listed and "registered" in listed and f"v{row['model_version']}" in listed
            assert f"{row['recent_rows']:,} recent + {len(pricing):,} reference" in listed
        challenger = row["model_version"]
        mlflow.set_tracking_uri(loop_env["RENTALSTREAM_REGISTRY_TRACKING_URI"])
        registered = mlflow.MlflowClient().get_model_version_by_alias("rentalstream-price", "challenger")
        assert str(registered.version) == challenger
        compiled = mlflow.MlflowClient().list_artifacts(registered.run_id, platform_folder())
        assert [Path(a.path).suffix for a in compiled] == [".o"], compiled

        scorer_url = f"http://127.0.0.1:{loop_env['RENTALSTREAM_SCORER_PORT']}"
        wait_for(
            lambda: any(
                dict(labels).get("version") == challenger
                for labels in metric_samples(scorer_url, "rentalstream_challenger_info")
            ),
            120,
            "the scorer to load the challenger",
            scorer,
            logs["scorer"],
        )
        asyncio.run(publish_requests(bootstrap, after, prefix="after"))
        sql = (
            "SELECT price_id, price_per_day, challenger_price_per_day, listed_price_per_day FROM prices "
            f"WHERE price_id LIKE 'after-%' AND challenger_model_version = '{challenger}'"
        )
        wait_for(lambda: len(query(db, sql)) == AFTER, 120, f"{AFTER} requests priced by both", scorer, logs["scorer"])
        scored = query(db, sql)

    # On listings the retrain never saw moved, by the stored prices and the true ones.
    champion_mae = float(np.mean(np.abs(scored.price_per_day - scored.listed_price_per_day)))
    challenger_mae = float(np.mean(np.abs(scored.challenger_price_per_day - scored.listed_price_per_day)))
    print(
        f"\nafter the retrain, {AFTER} requests: champion v{champion} MAE {champion_mae:.2f} €, challenger v{challenger} {challenger_mae:.2f} €"
    )
    assert challenger_mae < champion_mae  # and by more than chance: the paired evidence below

    promoted = run_cli(loop_env, "promote", challenger, "--if-better")
    print(promoted.stdout)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert (
        f"v{challenger} against v{champion} on {AFTER:,} true prices: MAE {challenger_mae:.2f} € against {champion_mae:.2f} €"
    ) in promoted.stdout
    assert "the challenger is better" in promoted.stdout
    assert str(mlflow.MlflowClient().get_model_version_by_alias("rentalstream-price", "champion").version) == challenger
