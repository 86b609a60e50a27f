"""The topics a price request may ask its reply on.

``price-replies`` (the bridge's), or a topic of the client's own that exists. Never
another topic of the catalogue: a reply is a ``PriceScored``, and written to ``rentals``
or ``prices`` it would corrupt them. Apache Kafka creates no topic on first use here
(``auto.create.topics.enable=false``), so a reply to a topic that does not exist could
never be delivered: the request is dead-lettered instead of being retried forever.
"""

from __future__ import annotations

import time

from aiokafka.admin import AIOKafkaAdminClient

from schemas.topics import CATALOGUE, PRICE_REPLIES

NOT_REPLY_TOPICS = frozenset(t.name for t in CATALOGUE) - {PRICE_REPLIES.name}
REFRESH_SECONDS = 1.0  # at most one topic listing a second, however many requests name an unknown topic


class ReplyTopics:
    def __init__(self, bootstrap: str, security: dict | None = None) -> None:
        self.bootstrap = bootstrap
        self.security = security or {}
        self.existing: set[str] = set()
        self._listed_at = float("-inf")

    async def allowed(self, wanted: set[str]) -> set[str]:
        """Which of ``wanted`` a reply may go to; lists the broker's topics again (at
        most once a second) when one of them is not known yet."""
        if wanted - self.existing and time.monotonic() - self._listed_at >= REFRESH_SECONDS:
            self.existing = await self._list_topics()
            self._listed_at = time.monotonic()
        return {name for name in wanted if name in self.existing and name not in NOT_REPLY_TOPICS}

    async def _list_topics(self) -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000, **self.security)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()
