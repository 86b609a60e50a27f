"""`rentalstream drift-report`: the monitor's last word on every signal, from drift_signals."""

from __future__ import annotations

from sqlalchemy import case, create_engine, select

from rentalstream.db import psycopg_url
from schemas.tables import drift_signals


def signal_states(database_url: str, drifting_only: bool = False) -> list[dict]:
    """Every signal's row, drifting ones first, then by name."""
    query = select(drift_signals).order_by(case((drift_signals.c.state == "drifting", 0), else_=1), drift_signals.c.signal)
    if drifting_only:
        query = query.where(drift_signals.c.state == "drifting")
    engine = create_engine(psycopg_url(database_url))
    try:
        with engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
    finally:
        engine.dispose()
