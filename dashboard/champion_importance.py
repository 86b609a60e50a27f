"""What drives the champion's prices: the global importance (mean absolute contribution
per feature, in euros) logged with the version behind the champion alias at training.

One ``ChampionImportance`` per dashboard process, shared by its pages: it asks the
registry (through ``runtime.registry_process``'s child, so the dashboard never imports
MLflow) at most every ``refresh_seconds``, fetches the artifact only when the version
changed, and lets the child go between asks.
"""

from __future__ import annotations

import asyncio
import logging
import time

from runtime.registry_process import RegistryProcess, RegistryUnavailable
from schemas.explanations import IMPORTANCE_ARTIFACT

log = logging.getLogger("rentalstream.dashboard")


class ChampionImportance:
    def __init__(self, registry: RegistryProcess, alias: str, refresh_seconds: float = 60.0) -> None:
        self.registry = registry
        self.alias = alias
        self.refresh_seconds = refresh_seconds
        self.version: str | None = None
        self.importance: dict[str, float] | None = None
        self._checked_at = -float("inf")
        self._lock = asyncio.Lock()

    async def current(self) -> tuple[str | None, dict[str, float] | None]:
        """(the champion's version, its importance), None where there is none (no champion,
        or a version trained before importance was logged)."""
        async with self._lock:
            if time.monotonic() - self._checked_at >= self.refresh_seconds:
                self._checked_at = time.monotonic()
                try:
                    version = await self.registry.version_behind(self.alias)
                    if version != self.version:
                        importance = (
                            None if version is None else await self.registry.artifact(version, IMPORTANCE_ARTIFACT)
                        )
                        self.version, self.importance = version, importance
                except RegistryUnavailable as error:
                    log.warning("champion importance unavailable error=%s", str(error).splitlines()[0])
                finally:
                    await self.registry.idle()
            return self.version, self.importance
