"""Replay the delay history (``get_around_delay_analysis.xlsx``) as a stream of rentals.

One ``RentalEvent`` per row, keyed by ``car_id``, in file order, each with the car
profile of its car (``producers.car_profiles``). Sends are pipelined: up to
``batch_size`` messages are in flight before their acknowledgements are awaited
together, which is what makes tens of thousands of messages per second possible
(one awaited send per message manages about 1.4k/s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faststream.kafka import KafkaBroker

from producers.car_profiles import assign_profiles, connect_cars, read_profile_pool
from rentalstream.datasets import read_delay_history
from schemas.events import RentalEvent, utc_now
from schemas.topics import RENTALS


@dataclass
class ReplayStats:
    published: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0


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
) -> ReplayStats:
    """Publish ``events`` to ``rentals``, paced at ``rate`` events/s or as fast as possible.

    Each event gets its event time at the moment it is sent.
    """
    broker = KafkaBroker(bootstrap, client_id="rentalstream-replay", linger_ms=5, max_batch_size=1 << 20)
    await broker.connect()
    try:
        started = time.perf_counter()
        # Paced: await the acks about every 100 ms of events, so the progress bar moves
        # and a slow broker is noticed, without falling back to one awaited send each.
        flush_every = batch_size if not rate else max(1, min(batch_size, int(rate / 10)))
        pending: list[asyncio.Future] = []
        for index, event in enumerate(events):
            if rate:
                ahead = started + index / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            event.event_time = utc_now()
            pending.append(
                await broker.publish(
                    event.model_dump_json().encode(), RENTALS.name,
                    key=str(event.car_id).encode(),
                    headers={"content-type": "application/json"}, no_confirm=True,
                )
            )  # fmt: skip
            if len(pending) >= flush_every:
                await asyncio.gather(*pending)
                on_progress(len(pending))
                pending.clear()
        await asyncio.gather(*pending)
        on_progress(len(pending))
        return ReplayStats(len(events), time.perf_counter() - started)
    finally:
        await broker.stop()
