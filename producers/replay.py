"""Replay the delay history (``get_around_delay_analysis.xlsx``) as a stream of rentals.

One ``RentalEvent`` per row, keyed by ``car_id``, in file order, each with the car
profile of its car (``producers.car_profiles``), published by ``producers.publishing``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from producers.car_profiles import assign_profiles, connect_cars, read_profile_pool
from producers.publishing import PublishStats, publish_paced
from runtime.datasets import read_delay_history
from schemas.events import RentalEvent
from schemas.topics import RENTALS


def rental_events(xlsx: Path, pricing_csv: Path, limit: int | None = None) -> list[RentalEvent]:
    history = read_delay_history(xlsx)  # profiles depend on the whole history, not the limit
    profiles = assign_profiles(
        {row["car_id"] for row in history}, connect_cars(history), read_profile_pool(pricing_csv)
    )
    rows = history if limit is None else history[:limit]
    return [RentalEvent(**row, car=profiles[row["car_id"]]) for row in rows]


async def publish_events(
    bootstrap: str,
    events: list[RentalEvent],
    *,
    rate: float | None = None,
    batch_size: int = 5000,
    on_progress: Callable[[int], None] = lambda n: None,
    security: dict | None = None,
) -> PublishStats:
    """Publish ``events`` to ``rentals``, paced at ``rate`` events/s or as fast as possible."""
    return await publish_paced(
        bootstrap,
        ((RENTALS.name, str(e.car_id), e) for e in events),
        rate=rate,
        batch_size=batch_size,
        on_progress=on_progress,
        client_id="rentalstream-replay",
        security=security,
    )
