"""No secret leaks: with a database password and API keys set (read from files, the
`RENTALSTREAM_<NAME>_FILE` way, and one from a keys file of hashes), every service runs
at DEBUG through good requests, refused ones and a database outage, and no secret shows
up in any log line, any HTTP answer (error bodies and /metrics included) or what
`rentalstream up` prints. Every service listens on 127.0.0.1 only."""

import asyncio
import time
from contextlib import ExitStack

import httpx
import psutil
import pytest

from producers.bridge_clients import key_digest
from producers.replay import publish_events, rental_events
from rentalstream import embedded, services
from rentalstream.processes import free_port
from schemas.predict import EXAMPLE_CAR
from tests.helpers import run_cli, service_process, wait_for
from tests.reliability.scorer_runs import stored_rentals

pytestmark = pytest.mark.reliability
DB_PASSWORD = "db-pw-7f3a9c-secret"
API_KEY = "api-key-51be02-secret"
CLIENT_KEY = "client-key-0c4d19-secret"  # in the keys file as its SHA-256 only
SERVICES = ("scorer", "bridge", "monitor", "dashboard")


def test_no_secret_in_logs_or_answers(own_postgres, scorer_env, delays_xlsx, pricing_csv, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "database-password").write_text(DB_PASSWORD + "\n")
    (secrets / "api-key").write_text(API_KEY)
    (secrets / "api-keys").write_text(f"pricing-svc {key_digest(CLIENT_KEY)}\n")
    env = {
        **scorer_env,
        "RENTALSTREAM_DATABASE_URL": own_postgres.url,  # the password comes from its file
        "RENTALSTREAM_DATABASE_PASSWORD_FILE": str(secrets / "database-password"),
        "RENTALSTREAM_BRIDGE_API_KEY_FILE": str(secrets / "api-key"),
        "RENTALSTREAM_BRIDGE_API_KEYS_FILE": str(secrets / "api-keys"),
        "RENTALSTREAM_LOG_LEVEL": "DEBUG",
    }
    for name in SERVICES:
        env[f"RENTALSTREAM_{name.upper()}_PORT"] = str(free_port())
    urls = {name: f"http://127.0.0.1:{env[f'RENTALSTREAM_{name.upper()}_PORT']}" for name in SERVICES}
    answers: list[str] = []

    def keep(response: httpx.Response) -> httpx.Response:
        answers.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    # What `rentalstream up` prints on these endpoints (it starts nothing of its own here).
    done = run_cli(env, "up", "--no-services")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "postgres" in done.stdout
    answers.append(done.stdout + done.stderr)

    with ExitStack() as running:
        for name in SERVICES:
            process = running.enter_context(service_process(name, env, tmp_path / f"{name}.log"))
            services.wait_ready(
                name, f"{urls[name]}/ready", process.pid, time.monotonic() + 120, str(tmp_path / f"{name}.log")
            )
        # Every service listens on loopback only, as the defaults say.
        ports = {int(env[f"RENTALSTREAM_{name.upper()}_PORT"]): name for name in SERVICES}
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet") if c.status == "LISTEN"}
        assert {(ip, port) for ip, port in listening if port in ports} == {("127.0.0.1", port) for port in ports}

        bridge = urls["bridge"]
        assert (
            keep(httpx.post(f"{bridge}/predict", json=EXAMPLE_CAR, headers={"X-API-Key": API_KEY})).status_code == 200
        )
        assert (
            keep(httpx.post(f"{bridge}/predict", json=EXAMPLE_CAR, headers={"X-API-Key": API_KEY[:-1]})).status_code
            == 401
        )
        assert keep(httpx.post(f"{bridge}/predict", json=EXAMPLE_CAR)).status_code == 401
        client_key = {"X-API-Key": CLIENT_KEY}
        assert keep(httpx.post(f"{bridge}/predict", json=EXAMPLE_CAR, headers=client_key)).status_code == 200
        assert (
            keep(httpx.post(f"{bridge}/predict", json={"fuel": 1}, headers={"X-API-Key": API_KEY})).status_code == 422
        )
        assert (
            keep(httpx.post(f"{bridge}/predict", content=b"x" * 70_000, headers={"X-API-Key": API_KEY})).status_code
            == 413
        )
        for name in SERVICES:
            for path in ("/health", "/ready", "/metrics", "/"):
                keep(httpx.get(f"{urls[name]}{path}", timeout=30))

        # A database outage mid-replay: the services log their connection errors.
        events = rental_events(delays_xlsx, pricing_csv, limit=500)
        embedded.stop_postgres(own_postgres.pgdata, own_postgres.system_user, mode="immediate")
        asyncio.run(publish_events(env["RENTALSTREAM_KAFKA_BOOTSTRAP"], events))
        time.sleep(4)
        for name in SERVICES:
            keep(httpx.get(f"{urls[name]}/ready", timeout=30))
        embedded.start_postgres(own_postgres.pgdata, own_postgres.port)
        wait_for(lambda: stored_rentals(own_postgres.url) == len(events), 120, "the replay to be stored")

    logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in SERVICES}
    lines = sum(text.count("\n") for text in logs.values())
    failures = sum(text.count("database write failed") for text in logs.values())
    print(f"{lines:,} log lines ({failures} database write failures logged), {len(answers)} HTTP answers checked")
    assert failures > 0  # the outage was seen, and logged
    assert any(a.startswith("503") for a in answers)  # and reported
    for secret in (DB_PASSWORD, API_KEY, CLIENT_KEY):
        assert not [name for name, text in logs.items() if secret in text]
        assert not [a for a in answers if secret in a]
