"""Create the topics of the catalogue explicitly, before any consumer starts.

A broker auto-creates an unknown topic on first use with its own default partition
count (4 on Tansu), which would silently change how keys spread over partitions.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from runtime.kafka.connect import start_when_reachable
from schemas.topics import CATALOGUE


async def ensure_topics(
    bootstrap: str, partitions: int, replication_factor: int = 1, timeout: float = 30, security: dict | None = None
) -> dict[str, int]:
    """Create missing catalogue topics; return the partition count of every topic (an
    existing topic keeps its own count: growing it would move keys to other partitions)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **(security or {}))
    await start_when_reachable(admin, timeout=timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [t.name for t in CATALOGUE if t.name not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor) for name in missing]
            )
        return await _partitions_with_leaders(admin, timeout)
    finally:
        await admin.close()


async def _partitions_with_leaders(admin: AIOKafkaAdminClient, timeout: float) -> dict[str, int]:
    """Every catalogue topic's partition count, once each partition has a leader: on a
    cluster, a topic just created is known to the controller before the brokers list
    its partitions, and a producer started in between would find none."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await admin.describe_topics([t.name for t in CATALOGUE])
        led = {d["topic"]: [p for p in d["partitions"] if p["leader"] >= 0] for d in described}
        if all(led.values()) and all(len(led[d["topic"]]) == len(d["partitions"]) for d in described):
            return {topic: len(partitions) for topic, partitions in led.items()}
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(
                f"topics without leaders after {timeout:.0f} s: {sorted(t for t, p in led.items() if not p)}"
            )
        await asyncio.sleep(0.1)


async def partition_ids(bootstrap: str, topic: str, security: dict | None = None) -> list[int]:
    """The partitions of ``topic`` as the broker describes them (empty if it does not
    exist). A consumer knows only the topics it has subscribed to or been assigned, so
    one that is to be assigned every partition of a topic asks here first."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **(security or {}))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        return sorted(p["partition"] for d in described if d["error_code"] == 0 for p in d["partitions"])
    finally:
        await admin.close()
