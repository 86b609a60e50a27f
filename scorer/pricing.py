"""A registered price model version, loaded from the files ``RegistryProcess.prepare`` left
in the model cache: its compiled trees when they are there and checked, else its booster.

Neither MLflow nor pandas is imported here, and LightGBM only when the booster is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from runtime.compiled_trees import PARALLEL_FROM_ROWS, CompiledTrees, load_object
from runtime.prepared_versions import PreparedVersion, check_contract
from runtime.registry import IncompatibleModel
from schemas.cars import CarFeatures
from schemas.features import feature_codes
from schemas.intervals import PriceInterval

__all__ = ["IncompatibleModel", "PriceModel"]


@dataclass(frozen=True)
class PriceModel:
    """``booster`` (a ``lightgbm.Booster``) or ``compiled`` (the same trees as machine
    code), or both; the compiled trees price when they are there."""

    name: str
    version: str
    booster: Any | None = None
    compiled: CompiledTrees | None = None
    interval: PriceInterval | None = None  # None for versions trained before intervals existed

    @classmethod
    def load(cls, name: str, prepared: PreparedVersion) -> PriceModel:
        """The version ``prepared``: its checked compiled trees, or else its booster (checked
        against the contract here). Blocks for a second or so: call it in a thread."""
        if prepared.compiled_object is not None:
            return cls(
                name, prepared.version, compiled=load_object(prepared.compiled_object), interval=prepared.interval
            )
        import lightgbm

        booster = lightgbm.Booster(model_file=str(prepared.model_text))
        return cls(name, prepared.version, booster=booster, interval=prepared.interval)

    def __post_init__(self) -> None:
        if self.booster is None and self.compiled is None:
            raise ValueError(f"{self.name} v{self.version}: neither a booster nor compiled trees to price with")
        if self.booster is not None:
            check_contract(self.booster, self.name, self.version)

    def with_compiled(self, compiled: CompiledTrees) -> PriceModel:
        return replace(self, compiled=compiled)

    def price_per_day(self, cars: Sequence[CarFeatures]) -> list[float]:
        if not cars:
            return []
        matrix = feature_codes(cars)
        if self.compiled is not None:
            predicted = self.compiled.predict(matrix)
        else:
            # Small batches on one thread: LightGBM's OpenMP workers spin after each
            # parallel call and take CPU from the broker and the database on a small machine.
            threads = 1 if len(cars) < PARALLEL_FROM_ROWS else 0  # 0: LightGBM's default
            predicted = self.booster.predict(matrix, num_threads=threads)
        return [round(p, 2) for p in np.asarray(predicted, dtype=np.float64).tolist()]
