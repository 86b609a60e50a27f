"""Publish a stream of events at a steady rate, or as fast as the broker takes them.

Sends are pipelined: up to ``batch_size`` messages are in flight before their
acknowledgements are awaited together, which is what makes tens of thousands of
messages per second possible (one awaited send per message manages about 1.4k/s).
Each event gets its event time at the moment it is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from schemas.events import utc_now


@dataclass
class PublishStats:
    published: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        return f"published {self.published} events in {self.seconds:.2f} s ({self.events_per_second:,.0f} events/s)"


async def publish_paced(
    bootstrap: str,
    messages: Iterable[tuple[str, str, BaseModel]],
    *,
    rate: float | None = None,
    batch_size: int = 5000,
    seconds: float | None = None,
    on_progress: Callable[[int], None] = lambda n: None,
    client_id: str = "rentalstream-producer",
) -> PublishStats:
    """Publish (topic, key, event) messages, paced at ``rate`` events/s or as fast as
    possible, until ``messages`` ends or ``seconds`` have passed.

    A cancellation (Ctrl-C) stops the stream after waiting for what is in flight."""
    broker = KafkaBroker(bootstrap, client_id=client_id, linger_ms=5, max_batch_size=1 << 20)
    await broker.connect()
    started = time.perf_counter()
    published = 0
    pending: list[asyncio.Future] = []
    # Paced: await the acks about every 100 ms of events, so progress shows and a slow
    # broker is noticed, without falling back to one awaited send each.
    flush_every = batch_size if not rate else max(1, min(batch_size, int(rate / 10)))

    async def flush() -> None:
        nonlocal published
        await asyncio.gather(*pending)
        published += len(pending)
        on_progress(len(pending))
        pending.clear()

    try:
        for index, (topic, key, event) in enumerate(messages):
            now = time.perf_counter()
            if seconds is not None and now - started >= seconds:
                break
            if rate:
                ahead = started + index / rate - now
                if ahead > 0:
                    await asyncio.sleep(ahead)
            event.event_time = utc_now()
            pending.append(
                await broker.publish(
                    event.model_dump_json().encode(), topic, key=key.encode(),
                    headers={"content-type": "application/json"}, no_confirm=True,
                )
            )  # fmt: skip
            if len(pending) >= flush_every:
                await flush()
    finally:
        try:
            await flush()
        finally:
            await broker.stop()
    return PublishStats(published, time.perf_counter() - started)
