"""What an alias of the model registry points to, kept current while a service runs.

The scorer keeps a loaded model in a slot per alias (champion, challenger); the bridge only
the champion's version. A slot changes by one assignment, after the new version is loaded
in full, so a reader that takes ``slot.current`` once per batch never sees a half-loaded
model, and every price names the version that made it.

>>> import asyncio
>>> versions = iter(["1", "1", "2"])
>>> async def version_of(): return next(versions)
>>> async def load(version): return f"model v{version}"
>>> slot = ModelSlot("champion", version_of, load)
>>> [asyncio.run(slot.refresh()) for _ in range(3)], slot.current
([True, False, True], 'model v2')
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Model = TypeVar("Model")
log = logging.getLogger("rentalstream.registry")


class ModelSlot(Generic[Model]):
    """The version behind ``alias`` (``version_of``, which may raise when it must exist) and,
    with ``load``, that version loaded."""

    def __init__(
        self,
        alias: str,
        version_of: Callable[[], Awaitable[str | None]],
        load: Callable[[str], Awaitable[Model]] | None = None,
    ) -> None:
        self.alias = alias
        self.version_of = version_of
        self.load = load
        self.version: str | None = None
        self.current: Model | None = None

    async def refresh(self) -> bool:
        """Follow the alias: True when it moved (the new version is loaded by then)."""
        version = await self.version_of()
        if version == self.version:
            return False
        loaded = None if version is None or self.load is None else await self.load(version)
        self.version, self.current = version, loaded  # one assignment for readers between two awaits
        return True

    def assume(self, version: str | None, model: Model | None) -> None:
        """Serve ``version``, loaded as ``model``, without asking (what a restarted service
        last served); the next ``refresh`` corrects it if the alias moved meanwhile."""
        self.version, self.current = version, model

    def replace(self, old: Model, new: Model) -> bool:
        """Put ``new`` (the same version, made faster: compiled trees) in place of ``old``,
        unless the alias moved on meanwhile."""
        if self.current is not old:
            return False
        self.current = new
        return True


async def follow(
    slots: list[ModelSlot],
    every: Callable[[], float],
    on_moved: Callable[[ModelSlot, str | None], None] = lambda slot, previous: None,
    at_once: bool = False,
) -> None:
    """Refresh ``slots`` for ever, ``every()`` seconds apart (the first time at once, with
    ``at_once``); ``on_moved(slot, previous version)`` after each move. A registry away
    for a while is logged, and what is loaded serves on."""
    while True:
        if not at_once:
            await asyncio.sleep(every())
        at_once = False
        for slot in slots:
            previous = slot.version
            try:
                moved = await slot.refresh()
            except Exception as error:  # noqa: BLE001  (the registry may be away; serve on with what is loaded)
                log.warning("registry check of @%s failed; serving on with v%s: %s", slot.alias, previous, error)
                continue
            if moved:
                on_moved(slot, previous)
