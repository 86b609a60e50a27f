"""Publish a stream of events at a steady rate, or as fast as the broker takes them.

Sends are batched and pipelined (``runtime.kafka.batch_publisher``): up to
``batch_size`` messages are in flight before their acknowledgements are awaited
together, which is what makes tens of thousands of messages per second possible (one
awaited send per message manages about 1.4k/s). Paced, the events due are sent every
~10 ms, not one by one. Each event gets its event time when it is handed to the producer.
When traces are kept (``runtime.tracing``), each chunk handed over is a span, and its
events carry it to the scorer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice

from pydantic import BaseModel

from runtime.kafka.batch_publisher import BatchPublisher
from runtime.kafka.traces import publishing
from runtime.tracing import carried, recording
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


# How long a publish waits for a partition without a leader before it fails: a cluster
# restarted whole was leaderless for more than aiokafka's 40 s default in the broker-fault
# test, and the replay then failed with LeaderNotAvailableError instead of resuming. The
# producer is idempotent, so records retried meanwhile are written once.
OUTAGE_WAIT_MS = 180_000


async def publish_paced(
    bootstrap: str,
    messages: Iterable[tuple[str, str, BaseModel]],
    *,
    rate: float | None = None,
    batch_size: int = 5000,
    seconds: float | None = None,
    on_progress: Callable[[int], None] = lambda n: None,
    client_id: str = "rentalstream-producer",
    security: dict | None = None,
) -> PublishStats:
    """Publish (topic, key, event) messages, paced at ``rate`` events/s or as fast as
    possible, until ``messages`` ends or ``seconds`` have passed.

    A cancellation (Ctrl-C) stops the stream after waiting for what is in flight."""
    publisher = BatchPublisher(bootstrap, client_id=client_id, request_timeout_ms=OUTAGE_WAIT_MS, security=security)
    await publisher.start()
    started = time.perf_counter()
    sent = published = 0
    pending: list[asyncio.Future] = []
    # Paced: every ~10 ms, send the events due by then (each gets its event time as it is
    # handed over) and await the acks every ~100 ms, so progress shows and a slow broker
    # is noticed. As fast as possible: ``batch_size`` events at a time.
    step = batch_size if not rate else max(1, min(batch_size, int(rate / 100)))
    ack_every = batch_size if not rate else max(1, min(batch_size, int(rate / 10)))
    iterator = iter(messages)

    async def flush() -> None:
        nonlocal published
        await asyncio.gather(*pending)
        on_progress(sent - published)
        published = sent
        pending.clear()

    try:
        while seconds is None or time.perf_counter() - started < seconds:
            due = step if not rate else max(1, int((time.perf_counter() - started) * rate) + 1 - sent)
            chunk = list(islice(iterator, due))
            stamp = utc_now()
            for _, _, event in chunk:
                event.event_time = stamp
            if chunk:
                # Traces off: no span, and the chunk's topics are not even gathered.
                with publishing(destinations(chunk), len(chunk)) if recording() else nullcontext() as span:
                    if span is not None:  # traces kept: the chunk's events carry its span to their consumers
                        headers = carried()  # one span, one header for all of them
                        chunk = [(*message, headers) for message in chunk]
                    pending.extend(await publisher.send(chunk))
                sent += len(chunk)
            if len(chunk) < due:
                break  # the stream has ended
            if sent - published >= ack_every:
                await flush()
            if rate:  # until the next step's events are due
                await asyncio.sleep(max(0.0, started + (sent + step - 1) / rate - time.perf_counter()))
    finally:
        try:
            await flush()
        finally:
            await publisher.stop()
    return PublishStats(published, time.perf_counter() - started)


def destinations(chunk: Sequence[tuple[str, str, BaseModel]]) -> str:
    """The topics of a chunk, as one span names them (the simulator's mixes two)."""
    return ",".join(sorted({topic for topic, _, _ in chunk}))
