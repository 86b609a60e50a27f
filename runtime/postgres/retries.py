"""Batch writes retried on database errors; past the last try the batch is nacked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

T = TypeVar("T")


async def with_retries(
    write: Callable[[], Awaitable[T]], retries: int, on_retry: Callable[[RetryCallState], None]
) -> T:
    """Retry a batch write on database errors with exponential backoff; past the last try
    the error propagates, so the batch is nacked and Kafka delivers it again."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((OperationalError, DBAPIError, OSError)),
        wait=wait_exponential(multiplier=0.2, max=10),
        stop=stop_after_attempt(retries + 1),
        reraise=True,
        before_sleep=on_retry,
    ):
        with attempt:
            return await write()
    raise AssertionError("unreachable: tenacity reraises the last error")
