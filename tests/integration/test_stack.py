"""`rentalstream up` / `down` with nothing configured: the embedded stack."""

import asyncio
import json

import pytest
from sqlalchemy import create_engine, inspect

from rentalstream import processes, stack
from rentalstream.db import psycopg_url
from rentalstream.settings import Settings
from schemas.topics import CATALOGUE
from tests.helpers import partition_counts

pytestmark = pytest.mark.integration


def test_up_starts_everything_on_loopback_and_down_stops_it(tmp_path, monkeypatch):
    for name in ("KAFKA_BOOTSTRAP", "DATABASE_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(f"RENTALSTREAM_{name}", raising=False)
    settings = Settings(home=tmp_path / "home", topic_partitions=5)
    try:
        state = stack.up(settings)
        assert settings.resolved_kafka_bootstrap().startswith("127.0.0.1:")
        assert "@127.0.0.1:" in settings.resolved_database_url()
        assert settings.resolved_mlflow_tracking_uri().startswith("sqlite:///")
        assert asyncio.run(partition_counts(settings.resolved_kafka_bootstrap())) == {
            t.name: 5 for t in CATALOGUE
        }
        engine = create_engine(psycopg_url(settings.resolved_database_url()))
        assert {"cars", "rentals", "prices", "delays", "dead_letters"} <= set(inspect(engine).get_table_names())
        engine.dispose()
        assert stack.up(settings)["pids"] == state["pids"]  # idempotent: nothing restarted
        pids = json.loads(settings.stack_file.read_text())["pids"]
    finally:
        stopped = stack.down(settings)
    assert sorted(stopped) == ["broker", "postgres"]
    assert not any(processes.alive(pid) for pid in pids.values())
    assert not settings.stack_file.exists()
