"""Which model version's reference the monitor compares with.

The monitor follows the version that is pricing, not the registry's alias: a promotion
shows in the prices before anyone asks the registry, and so does a rollback. A batch
whose every price came from one other version switches the reference to that version's
before the batch is observed. A batch that mixes versions (the moment a promotion
reaches the scorers) switches nothing, so the detectors are not reset back and forth.

A version trained without reference statistics keeps the monitor on the reference it
has: it is remembered and not asked for again, and its prices are watched against
that reference.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.events import PriceScored


def version_to_load(
    prices: Iterable[PriceScored], model_name: str, reference_version: str, without_reference: set[str]
) -> str | None:
    """The version whose reference to load before observing ``prices``, or None to keep
    ``reference_version``'s."""
    versions = {price.model_version for price in prices if price.model_name == model_name}
    if len(versions) != 1:
        return None
    (version,) = versions
    if not version.isdigit() or version == reference_version or version in without_reference:
        return None  # registry versions are numbers
    return version
