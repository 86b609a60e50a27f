"""The batch subscriber every consumer uses polls again at once after an empty poll: a
record arriving while the consumer is idle is handed over when it is fetched, not after a
nap (FastStream's own subscriber sleeps batch_timeout_ms there)."""

import asyncio

import faststream.kafka.subscriber.usecase as faststream_subscriber
from faststream.kafka import KafkaBroker

from runtime.kafka.subscriber import batch_subscriber


class Polls:
    """A consumer whose polls find nothing, then the given records."""

    def __init__(self, *answers: dict) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[int, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.asked.append((timeout_ms, max_records))
        return self.answers.pop(0)


def test_an_empty_poll_is_followed_by_the_next_poll_not_a_sleep(monkeypatch):
    async def no_nap(seconds: float) -> None:
        raise AssertionError(f"the subscriber slept {seconds} s after an empty poll")

    monkeypatch.setattr(faststream_subscriber.anyio, "sleep", no_nap)
    subscriber = batch_subscriber(KafkaBroker("127.0.0.1:9"), "rentals", "g", max_records=500, batch_timeout_ms=1000)
    consumer = Polls({}, {"tp0": ["r1", "r2"], "tp1": ["r3"]})

    async def two_polls():
        return await subscriber.get_msg(consumer), await subscriber.get_msg(consumer)

    assert asyncio.run(two_polls()) == ((), ("r1", "r2", "r3"))
    assert consumer.asked == [(1000, 500), (1000, 500)]
