"""The monitor's writes: alerts, the current state of the signals, dead letters — one
transaction per batch, every row an upsert."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.postgres.upsert import insert_dead_letters, upsert
from schemas import tables
from schemas.events import DeadLetter, DriftAlert


async def write_batch(
    engine: AsyncEngine, alerts: Sequence[DriftAlert], signal_states: Sequence[dict], dead_letters: Sequence[DeadLetter]
) -> None:
    async with engine.begin() as conn:
        await upsert(conn, tables.drift_events, "alert_id", [alert_row(a) for a in alerts])
        await upsert(conn, tables.drift_signals, "signal", list(signal_states))
        await insert_dead_letters(conn, dead_letters)


def alert_row(alert: DriftAlert) -> dict:
    return {
        **alert.model_dump(exclude={"before", "after", "reference"}),
        **{f"before_{k}": v for k, v in alert.before.model_dump().items()},
        **{f"after_{k}": v for k, v in alert.after.model_dump().items()},
        "reference_mean": alert.reference.mean if alert.reference else None,
        "reference_std": alert.reference.std if alert.reference else None,
    }
