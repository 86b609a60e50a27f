"""The running bridge with a keys file, as an operator runs it: keys made by `rentalstream
api-key add`, each client in the request log under its key's name, one client past its
rate limit answered 429 with Retry-After while the other goes on, a key rotated without a
restart, and every answer counted per client in /metrics."""

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from rentalstream import services
from runtime.settings import normalised_database_url
from schemas.predict import EXAMPLE_CAR
from tests.helpers import run_cli, service_process, wait_for

pytestmark = pytest.mark.e2e


def new_key(env: dict[str, str], *args: str) -> str:
    made = run_cli(env, "api-key", "add", *args)
    assert made.returncode == 0, made.stdout + made.stderr
    return made.stdout.strip().splitlines()[-1]


def client_responses(url: str) -> dict[tuple[str, str], float]:
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    family = next(f for f in families if f.name == "rentalstream_bridge_client_responses")
    return {(s.labels["client"], s.labels["status"]): s.value for s in family.samples if s.name.endswith("_total")}


def logged_clients(database_url: str) -> dict[str, str]:
    engine = create_engine(normalised_database_url(database_url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT request_id, client FROM price_requests")).all()
    engine.dispose()
    return {row.request_id: row.client for row in rows}


def test_clients_are_known_by_their_keys_limited_apart_and_rotated_live(
    scorer_process, scorer_env, bridge_env, tmp_path
):
    keys = tmp_path / "secrets" / "api-keys"
    env = {k: v for k, v in bridge_env.items() if k != "RENTALSTREAM_BRIDGE_API_KEY"}
    env["RENTALSTREAM_BRIDGE_API_KEYS_FILE"] = str(keys)
    pricing = new_key(env, "pricing-svc")
    batch = new_key(env, "batch-job", "--limit", "3/minute")
    assert pricing not in keys.read_text() and batch not in keys.read_text()
    url = f"http://127.0.0.1:{env['RENTALSTREAM_BRIDGE_PORT']}"
    log = tmp_path / "bridge.log"
    scorer_url = f"http://127.0.0.1:{scorer_env['RENTALSTREAM_SCORER_PORT']}/ready"
    with service_process("bridge", env, log) as bridge, httpx.Client(base_url=url, timeout=10) as http:
        services.wait_ready("bridge", f"{url}/ready", bridge.pid, time.monotonic() + 120, str(log))
        services.wait_ready("scorer", scorer_url, scorer_process.pid, time.monotonic() + 120)

        def ask(key: str | None, **headers: str) -> httpx.Response:
            return http.post("/predict", json=EXAMPLE_CAR, headers={**headers, **({"X-API-Key": key} if key else {})})

        # Each client under its key's name in the request log, whatever it says it is.
        said = ask(pricing, **{"X-Client-Id": "someone-else"})
        assert said.status_code == 200, said.text
        answers = [ask(batch) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60 and "batch-job" in answers[-1].json()["detail"]
        assert ask(pricing).status_code == 200  # its own count: not limited by the other's
        assert ask("not-a-key").status_code == 401 and ask(None).status_code == 401
        served = {said.json()["request_id"]: "pricing-svc", answers[0].json()["request_id"]: "batch-job"}
        wait_for(
            lambda: served.items() <= logged_clients(scorer_env["RENTALSTREAM_DATABASE_URL"]).items(),
            30,
            "the request log rows",
        )

        # Rotation: a second key for pricing-svc, then the first one removed; no restart.
        rotated = new_key(env, "pricing-svc")
        wait_for(lambda: ask(rotated).status_code == 200, 10, "the new key taken", bridge, log)
        assert ask(pricing).status_code == 200  # both, while the callers move
        first_line = next(line for line in keys.read_text().splitlines() if line.startswith("pricing-svc"))
        keys.write_text(keys.read_text().replace(first_line + "\n", ""))
        wait_for(lambda: ask(pricing).status_code == 401, 10, "the old key dropped", bridge, log)
        assert ask(rotated).status_code == 200
        assert bridge.poll() is None  # the same process throughout

        counted = client_responses(url)
        assert counted[("batch-job", "200")] == 3 and counted[("batch-job", "429")] == 1
        assert counted[("pricing-svc", "200")] >= 4 and counted[("unknown", "401")] >= 3
