"""`rentalstream export` keeps its memory flat however large the table: the peak RSS of
exporting prices tables of growing size, to CSV and to Parquet.

    python benchmarks/export_memory.py [--rows 100000 1000000]

Starts an embedded PostgreSQL in a temporary folder and, for each size, fills ``prices``
with that many rows (``generate_series``: one SQL statement, no client in the way), then
runs ``rentalstream export prices`` in a child process for each format, sampling the
child's RSS every 20 ms. It prints, per size and format, the seconds, the rows per
second, the peak RSS, and the file's size. Streaming holds if the peak stays the same
as the table grows tenfold.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text

from rentalstream.embedded import start_postgres, stop_postgres
from runtime.postgres.engines import upgrade
from runtime.settings import normalised_database_url

FILL = text("""
    INSERT INTO prices (price_id, rental_id, car_id, price_per_day, price_lower, price_upper, unknown_fields,
                        model_name, model_version, event_time, scored_at)
    SELECT 'rental-' || i, i, i % 8000, 100 + i % 97, 88 + i % 97, 111 + i % 97,
           CASE WHEN i % 50 = 0 THEN ARRAY['model_key'] ELSE ARRAY[]::text[] END,
           'rentalstream-price', '1', now() - i * interval '1 second', now()
    FROM generate_series(1, :rows) AS i
""")


def fill(url: str, rows: int) -> None:
    engine = create_engine(normalised_database_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE prices"))
            conn.execute(FILL, {"rows": rows})
    finally:
        engine.dispose()


def export(url: str, fmt: str, output: Path) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one `rentalstream export prices` in a child process."""
    env = {**os.environ, "RENTALSTREAM_DATABASE_URL": url}
    command = [sys.executable, "-m", "rentalstream.cli", "export", "prices", "--format", fmt, "--output", str(output)]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"export failed: {child.stderr.read()}")
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print(
        f"export memory, {time.strftime('%Y-%m-%d')}, {platform.node()} ({os.cpu_count()} cores), "
        "embedded PostgreSQL on the same cores; prices rows generated in SQL"
    )
    print(f"{'rows':>10} {'format':>8} {'seconds':>8} {'rows/s':>10} {'peak RSS':>10} {'file':>10}")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        server = start_postgres(Path(folder) / "pgdata")
        try:
            upgrade(server.url)
            for rows in args.rows:
                fill(server.url, rows)
                for fmt in ("csv", "parquet"):
                    output = Path(folder) / f"prices.{fmt}"
                    seconds, peak = export(server.url, fmt, output)
                    print(
                        f"{rows:>10,} {fmt:>8} {seconds:>8.1f} {rows / seconds:>10,.0f} "
                        f"{peak / 2**20:>7.0f} MiB {output.stat().st_size / 2**20:>6.0f} MiB"
                    )
        finally:
            stop_postgres(server.pgdata, server.system_user)


if __name__ == "__main__":
    main()
