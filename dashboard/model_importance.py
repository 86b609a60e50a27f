"""What drives the prices being served: the global importance (mean absolute contribution
per feature, in euros) logged with a version at training.

One ``ModelImportance`` per dashboard process, shared by its pages. It asks the registry
through ``runtime.registry_process``'s child (so the dashboard never imports MLflow),
once per version, and lets the child go after each ask. A page asks for the version of
the latest price, and for the champion's before anything is priced, so a page costs
nothing until the serving version changes.
"""

from __future__ import annotations

import asyncio
import logging

from runtime.registry_process import RegistryProcess, RegistryUnavailable
from schemas.explanations import IMPORTANCE_ARTIFACT

log = logging.getLogger("rentalstream.dashboard")


class ModelImportance:
    def __init__(self, registry: RegistryProcess, champion_alias: str) -> None:
        self.registry = registry
        self.champion_alias = champion_alias
        self._known: dict[str, dict[str, float] | None] = {}
        self._lock = asyncio.Lock()

    async def of(self, version: str | None) -> tuple[str | None, dict[str, float] | None]:
        """(``version``, or the champion's when None; its importance), None where there is
        none: no champion, or a version trained before importance was logged."""
        async with self._lock:
            try:
                if version is None:
                    version = await self.registry.version_behind(self.champion_alias)
                if version is not None and version not in self._known:
                    self._known[version] = await self.registry.artifact(version, IMPORTANCE_ARTIFACT)
            except RegistryUnavailable as error:
                log.warning("model importance unavailable error=%s", str(error).splitlines()[0])
            finally:
                await self.registry.idle()
            return version, self._known.get(version) if version is not None else None
