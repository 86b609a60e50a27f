"""The batch subscriber every consumer uses polls again at once after an empty poll: a
record arriving while the consumer is idle is handed over when it is fetched, not after a
nap (FastStream's own subscriber sleeps batch_timeout_ms there). And its watch over
rebalances, around the listener it is given, tells a handler whether the batch in hand was
fetched before a rebalance began."""

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


class Revokes:
    """A rebalance listener that notes what it hears, and whether the batch in hand was
    outdated by then."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, bool]] = []
        self.watch = None

    async def on_partitions_revoked(self, revoked) -> None:
        self.heard.append(("revoked", self.watch.batch_outdated))

    def on_partitions_assigned(self, assigned) -> None:  # aiokafka allows plain functions too
        self.heard.append(("assigned", self.watch.batch_outdated))


def test_a_batch_fetched_before_a_rebalance_began_is_outdated_and_the_next_one_is_not():
    """The race CI met on eeed15f: a batch fetched, then a rebalance begins (the listener
    is told its partitions are revoked) before the handler takes the batch in hand. Its
    partitions resume from committed offsets, so its handler must be told to leave it; a
    batch fetched after the rebalance is current again. The subscriber's own listener
    hears of the rebalance after the watch has counted it: the scorer's waits for the
    handler, which then asks whether its batch is outdated."""
    listener = Revokes()
    subscriber = batch_subscriber(
        KafkaBroker("127.0.0.1:9"), "rentals", "g", max_records=500, batch_timeout_ms=1000, listener=listener
    )
    watch = listener.watch = subscriber.rebalances
    consumer = Polls({"tp0": ["r1"]}, {}, {"tp0": ["r1"]})

    async def seen() -> list[bool]:
        outdated = []
        await subscriber.get_msg(consumer)
        outdated.append(watch.batch_outdated)  # fetched, no rebalance since
        await watch.on_partitions_revoked(set())  # what aiokafka calls: the listener is wrapped
        outdated.append(watch.batch_outdated)  # the rebalance began before it was taken in hand
        await watch.on_partitions_assigned(set())
        await subscriber.get_msg(consumer)  # an empty poll hands nothing over: still outdated
        outdated.append(watch.batch_outdated)
        await subscriber.get_msg(consumer)  # fetched again after the rebalance
        outdated.append(watch.batch_outdated)
        return outdated

    assert asyncio.run(seen()) == [False, True, True, False]
    assert listener.heard == [("revoked", True), ("assigned", True)]


def test_a_subscriber_given_no_listener_still_watches_its_rebalances():
    subscriber = batch_subscriber(KafkaBroker("127.0.0.1:9"), "rentals", "g", max_records=500, batch_timeout_ms=1000)
    consumer = Polls({"tp0": ["r1"]})

    async def outdated() -> bool:
        await subscriber.get_msg(consumer)
        await subscriber.rebalances.on_partitions_revoked(set())
        return subscriber.rebalances.batch_outdated

    assert asyncio.run(outdated())
