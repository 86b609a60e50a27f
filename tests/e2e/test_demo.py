"""`rentalstream demo` from an empty folder: the user's first command."""

import asyncio
import json
import os
import re
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import create_engine, text

from rentalstream.kafka_jars import kafka_version
from rentalstream.processes import alive, free_port
from runtime.settings import normalised_database_url
from schemas.cars import CATEGORICAL, EQUIPMENT, NUMERIC
from tests.helpers import SAMPLE_CAR, log_end
from tests.reliability.scorer_runs import committed

pytestmark = pytest.mark.e2e


def test_demo_runs_the_whole_flow_and_stops_everything(tmp_path, data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENTALSTREAM_")}
    env |= {
        "RENTALSTREAM_DATA_DIR": str(data_dir),
        "RENTALSTREAM_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
        "RENTALSTREAM_SCORER_PORT": str(free_port()),
        "RENTALSTREAM_BRIDGE_PORT": str(free_port()),
        "RENTALSTREAM_MONITOR_PORT": str(free_port()),
        "RENTALSTREAM_DASHBOARD_PORT": str(free_port()),
    }
    result = subprocess.run(
        [sys.executable, "-m", "rentalstream.cli", "demo", "--limit", "2000", "--no-wait"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "events published" in out and "conflicts" in out and "psql" in out
    published = next(line for line in out.splitlines() if "events published" in line)
    scored = next(line for line in out.splitlines() if "events scored" in line)
    assert published.split()[-2] == scored.split()[-2] == "2,000"
    assert re.search(r"bridge: POST http://127\.0\.0\.1:\d+/predict priced a Citroën convertible at [\d.]+ €/day", out)
    # every signal of the monitor, none drifting: mileage and engine power, each category and
    # equipment, the delay per check-in type, conflicts, the two price streams, the realised
    # MAE and the estimated one
    signals = len(NUMERIC) + sum(len(c) for c in CATEGORICAL.values()) + len(EQUIPMENT) + 2 + 1 + 2 + 1 + 1
    assert f"drift monitor: 0 of {signals} signals drifting after 2,000 rentals" in out, out
    assert re.search(r"Open the dashboard now to watch the replay fill it: http://127\.0\.0\.1:\d+/", out)
    assert "minimum gap between two rentals of a car" in out and "Connect cars only" in out
    assert not (tmp_path / ".rentalstream" / "stack.json").exists()  # everything stopped

    # `up` brings back the stack and its services; the events survived in Kafka's log and
    # the results in Postgres, the bridge answers, and `down` stops every process.
    subprocess.run(
        [sys.executable, "-m", "rentalstream.cli", "up"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    state = json.loads((tmp_path / ".rentalstream" / "stack.json").read_text())
    try:
        assert state["kafka"]["version"] == kafka_version()
        assert asyncio.run(log_end(state["kafka_bootstrap"], "rentals")) == 2000
        assert asyncio.run(committed(state["kafka_bootstrap"], "rentalstream-scorer.rentals", "rentals")) == 2000
        engine = create_engine(normalised_database_url(state["database_url"]))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM delays")).scalar_one() == 2000
            assert conn.execute(text("SELECT count(*) FROM price_requests")).scalar_one() == 1  # the demo's
        engine.dispose()
        answer = httpx.post(f"{state['services']['bridge']['url']}/predict", json=SAMPLE_CAR, timeout=10)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        page = httpx.get(f"{state['services']['dashboard']['url']}/", timeout=30)
        assert page.status_code == 200 and "rentalstream" in page.text
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "rentalstream.cli", "down"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    pids = [*state["pids"].values(), *(service["pid"] for service in state["services"].values())]
    assert len(pids) == 6 and not any(alive(pid) for pid in pids)
