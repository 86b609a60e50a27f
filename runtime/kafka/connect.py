"""Start Kafka clients against a broker that may not accept connections yet."""

from __future__ import annotations

from aiokafka.errors import KafkaConnectionError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed


async def start_when_reachable(*clients, timeout: float = 30, pause: float = 0.2) -> None:
    """``await client.start()`` for each client in order, retrying all of them every ``pause``
    seconds while the broker refuses connections (a broker just started, or restarting);
    past ``timeout`` the last connection error is raised."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((KafkaConnectionError, OSError)),
        wait=wait_fixed(pause),
        stop=stop_after_delay(timeout),
        reraise=True,
    ):
        with attempt:
            for client in clients:
                await client.start()
