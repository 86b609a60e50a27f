"""A consumer's batches stored one after another while the next batch is scored.

A batch's work has two halves: scoring it (Python, on the consumer's thread) and storing
it (mostly waiting for PostgreSQL, then handing the results on to ``Results.deliver``).
``WriteBehind`` runs the second half of batch N in a task of its own, so the handler
returns and batch N+1 is fetched and scored meanwhile. The stores stay strictly in input
order, one at a time: batch N+1's store starts only once batch N's has finished, so it
reads everything batch N wrote (a rental's previous rental, say), and offsets are handed
on in order.

A store that fails (the database away for longer than the retries) has its batch sought
back to its first offsets, as a failing handler's would be. Batch N+1, fetched and scored
before that seek, is then dropped and sought back too (``BatchDropped``), and both are
consumed again: nothing past a failed batch is ever committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiokafka import TopicPartition

from runtime.kafka.delivery import Acknowledgeable, BatchDropped, earliest_offsets, fetched_before_rewind
from runtime.kafka.subscriber import KafkaRecord

log = logging.getLogger("runtime.kafka.write_behind")

Rewind = Callable[[Sequence[KafkaRecord], Acknowledgeable, Mapping[TopicPartition, int]], Awaitable[None]]


class WriteBehind:
    """One store at a time, in input order, each behind the scoring of the next batch.

    ``rewind`` seeks a batch's partitions back (``Results.rewind``); ``observe`` gets each
    batch's seconds from its handler's start to its store's end."""

    def __init__(self, name: str, rewind: Rewind, observe: Callable[[float], None] = lambda seconds: None) -> None:
        self.name = name
        self._rewind = rewind
        self._observe = observe
        self._storing: asyncio.Task[None] | None = None
        self.rewound: dict[TopicPartition, int] = {}  # where failed stores sought their partitions back to

    async def hand_on(
        self,
        records: Sequence[KafkaRecord],
        message: Acknowledgeable,
        store: Callable[[], Awaitable[None]],
        started: float,
    ) -> None:
        """Start storing a scored batch once the batch before it is stored, and return.

        Raises ``BatchDropped`` when the batch before it failed and this one was fetched
        before its rewind: the caller then rewinds it (``rewind``), as any failed batch.
        ``started`` is the handler's ``time.perf_counter()`` at the batch's start."""
        await self.settle()
        if self.rewound:  # only after a failed store
            earliest = earliest_offsets(records)
            if fetched_before_rewind(earliest, self.rewound):
                raise BatchDropped(f"a batch of {len(records)} fetched before a failed store's rewind")
            for tp, offset in earliest.items():  # consumed again from where it was sought back to
                if offset <= self.rewound.get(tp, -1):
                    del self.rewound[tp]
        self._storing = asyncio.create_task(self._store(records, message, store, started), name=f"{self.name}-store")

    async def settle(self) -> None:
        """Wait until the last batch handed on is stored (or has failed and been sought back)."""
        while self._storing is not None and not self._storing.done():
            await asyncio.shield(self._storing)  # it never raises (see _store)

    async def rewind(self, records: Sequence[KafkaRecord], message: Acknowledgeable) -> None:
        """Have ``records`` consumed again, from no later than where a failed store left
        each of their partitions: ``Results.rewind`` seeks once, to the earliest of that and
        of where a failed transaction left it (seeking here after it could move a partition
        forward past records never committed, and the batch after them would be dropped
        for ever)."""
        await self._rewind(records, message, self.rewound)

    def forget_rewinds(self) -> None:
        """Partitions were assigned: every one resumes from committed offsets now."""
        self.rewound.clear()

    async def _store(
        self,
        records: Sequence[KafkaRecord],
        message: Acknowledgeable,
        store: Callable[[], Awaitable[None]],
        started: float,
    ) -> None:
        try:
            await store()
        except Exception as error:  # logged; the batch is consumed again
            dropped = isinstance(error, BatchDropped)  # a failed transaction's rewind: expected
            log.log(
                logging.INFO if dropped else logging.ERROR,
                "%s: a batch of %d records was not stored (%r); it will be consumed again",
                self.name,
                len(records),
                error,
                exc_info=not dropped,
            )
            earliest = earliest_offsets(records)
            self.rewound.update({tp: min(offset, self.rewound.get(tp, offset)) for tp, offset in earliest.items()})
            try:
                await self.rewind(records, message)
            except Exception as error:  # noqa: BLE001  (stopping: the group's offsets decide)
                log.info("%s: could not seek back after the failed store: %r", self.name, error)
            return
        self._observe(time.perf_counter() - started)
