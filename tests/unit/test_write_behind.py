"""WriteBehind's order, without a broker: the handler returns while its batch is stored,
and the stores run one at a time, in the order the batches were handed on. (A failed
store and the rewind that follows, on a real broker: tests/integration/test_write_behind.py.)"""

import asyncio
import time
from dataclasses import dataclass

from runtime.kafka.write_behind import WriteBehind


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None


async def never_rewound(records, message) -> None:
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
