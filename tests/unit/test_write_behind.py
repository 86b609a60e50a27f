"""WriteBehind's order, without a broker: the handler returns while its batch is stored,
and the stores run one at a time, in the order the batches were handed on. (A failed
store and the rewind that follows, on a real broker: tests/integration/test_write_behind.py.)"""

import asyncio
import time
from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition

from runtime.kafka.delivery import BatchDropped, TransactionalResults
from runtime.kafka.write_behind import WriteBehind


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None


async def never_rewound(records, message, floor) -> None:
    raise AssertionError("no store fails here")


def test_the_handler_returns_while_its_batch_is_stored_and_stores_run_one_at_a_time_in_order():
    async def scenario() -> tuple[list[str], bool, bool]:
        writes = WriteBehind("test", never_rewound)
        log: list[str] = []
        release_first = asyncio.Event()

        def store(name: str, wait: asyncio.Event | None = None):
            async def stored() -> None:
                log.append(f"{name} begins")
                if wait is not None:
                    await wait.wait()
                log.append(f"{name} ends")

            return stored

        first, second = [Record("rentals", 0, 0)], [Record("rentals", 0, 1)]
        await writes.hand_on(first, None, store("first", release_first), started=0.0)
        await asyncio.sleep(0.01)
        first_handed_while_storing = log == ["first begins"]

        second_handed = asyncio.create_task(writes.hand_on(second, None, store("second"), started=0.0))
        await asyncio.sleep(0.01)
        second_waited = not second_handed.done() and log == ["first begins"]
        release_first.set()
        await second_handed
        await writes.settle()
        return log, first_handed_while_storing, second_waited

    log, first_handed_while_storing, second_waited = asyncio.run(scenario())
    assert first_handed_while_storing  # the next batch is fetched and scored meanwhile
    assert second_waited  # its store begins only once the first's has ended
    assert log == ["first begins", "first ends", "second begins", "second ends"]


def test_each_batch_is_timed_from_its_handler_start_to_its_store_end():
    seconds: list[float] = []

    async def scenario() -> None:
        writes = WriteBehind("test", never_rewound, seconds.append)
        started = time.perf_counter() - 0.5  # the handler began half a second ago
        await writes.hand_on([Record("rentals", 0, 0)], None, lambda: asyncio.sleep(0.01), started=started)
        await writes.settle()

    asyncio.run(scenario())
    assert len(seconds) == 1 and 0.5 < seconds[0] < 5  # not just the handler's part, nor only the store's


class SeekingConsumer:
    """The consumer's one call a rewind makes: where each partition is sought to."""

    def __init__(self) -> None:
        self.positions: dict[TopicPartition, int] = {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset


@dataclass
class Handed:
    consumer: SeekingConsumer


def test_a_batch_dropped_after_a_failed_transaction_is_sought_back_to_the_transaction_not_past_it():
    """A failed transaction sought partition 0 back to offset 100. The batch fetched before
    that seek (offsets 150-160) is stored, then dropped at delivery, and the batch behind
    it (161-170) is dropped at hand-on. Both rewinds must leave partition 0 at 100: the
    store's own rewind point (150) once moved it forward again, offsets 100-149 were
    never consumed again, and the scorer dropped the same two batches for ever (CI, a
    broker killed during a replay)."""
    tp = TopicPartition("rentals", 0)

    async def scenario() -> dict[TopicPartition, int]:
        results = TransactionalResults("127.0.0.1:9", "test", "test-tx", "test-group")
        results.rewound[tp] = 100  # where the failed transaction sought partition 0 back to
        writes = WriteBehind("test", results.rewind)
        handed = Handed(SeekingConsumer())
        stored_then_dropped = [Record("rentals", 0, offset) for offset in range(150, 161)]

        async def store_and_deliver() -> None:
            await results.deliver([], stored_then_dropped, handed)  # raises BatchDropped: 150 > 100

        await writes.hand_on(stored_then_dropped, handed, store_and_deliver, started=0.0)
        behind = [Record("rentals", 0, offset) for offset in range(161, 171)]
        with pytest.raises(BatchDropped):
            await writes.hand_on(behind, handed, lambda: asyncio.sleep(0), started=0.0)
        await writes.rewind(behind, handed)  # what the handler does with any batch that fails
        return handed.consumer.positions

    assert asyncio.run(scenario()) == {tp: 100}
