"""Create the topics of the catalogue explicitly, before any consumer starts.

A broker auto-creates an unknown topic on first use with its own default partition
count (4 on Tansu), which would silently change how keys spread over partitions.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from schemas.topics import CATALOGUE


async def ensure_topics(
    bootstrap: str, partitions: int, replication_factor: int = 1, timeout: float = 30
) -> dict[str, int]:
    """Create missing catalogue topics; return the partition count of every topic (an
    existing topic keeps its own count: growing it would move keys to other partitions)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    # A broker that has just been started may not accept connections yet.
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((KafkaConnectionError, OSError)),
        wait=wait_fixed(0.2), stop=stop_after_delay(timeout), reraise=True,
    ):  # fmt: skip
        with attempt:
            await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t.name for t in CATALOGUE if t.name not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor) for name in missing]
            )
        described = await admin.describe_topics([t.name for t in CATALOGUE])
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()

