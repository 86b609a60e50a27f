"""`rentalstream demo` from an empty folder: the user's first command."""

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from rentalstream.db import psycopg_url
from rentalstream.embedded import free_port

pytestmark = pytest.mark.e2e


def test_demo_runs_the_whole_flow_and_stops_everything(tmp_path, data_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENTALSTREAM_")}
    env |= {"RENTALSTREAM_DATA_DIR": str(data_dir), "RENTALSTREAM_LOG_LEVEL": "WARNING", "COLUMNS": "200",
            "RENTALSTREAM_SCORER_PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "rentalstream.cli", "demo", "--limit", "2000", "--no-wait"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "events published" in out and "conflicts" in out and "psql" in out
    published = next(line for line in out.splitlines() if "events published" in line)
    scored = next(line for line in out.splitlines() if "events scored" in line)
    assert published.split()[-2] == scored.split()[-2] == "2,000"
    assert not (tmp_path / ".rentalstream" / "stack.json").exists()  # everything stopped

    # The results survive in Postgres: bring the stack up again and count.
    subprocess.run([sys.executable, "-m", "rentalstream.cli", "up"], cwd=tmp_path, env=env, check=True, capture_output=True)
    try:
        import json

        url = json.loads((tmp_path / ".rentalstream" / "stack.json").read_text())["database_url"]
        engine = create_engine(psycopg_url(url))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM delays")).scalar_one() == 2000
        engine.dispose()
    finally:
        subprocess.run([sys.executable, "-m", "rentalstream.cli", "down"], cwd=tmp_path, env=env, check=True, capture_output=True)
