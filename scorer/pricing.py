"""A registered price model version, loaded from the MLflow registry with its interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.compiled_trees import CompiledTrees
from runtime.registry import Registry
from schemas.cars import CATEGORICAL, CarFeatures
from schemas.intervals import PriceInterval
from training.features import CATEGORICAL_FEATURES, FEATURES, feature_codes

PARALLEL_FROM_ROWS = 500


class IncompatibleModel(RuntimeError):
    pass


@dataclass(frozen=True)
class PriceModel:
    name: str
    version: str
    model: Any  # the native LightGBM flavour: a fitted LGBMRegressor
    compiled: CompiledTrees | None = None  # the same trees as machine code, once compiled
    interval: PriceInterval | None = None  # None for versions trained before intervals existed

    @classmethod
    def load(cls, registry: Registry, alias: str = "champion") -> PriceModel:
        # Load the exact version, not the alias, so a concurrent promotion cannot
        # make the recorded version differ from the loaded one.
        return cls.load_version(registry, registry.champion(alias))

    @classmethod
    def load_version(cls, registry: Registry, version: str, compiled_cache: Path | None = None) -> PriceModel:
        """``version`` from ``registry``; with ``compiled_cache``, also the compiled trees
        logged with it for this platform, into that cache (unless they are there), for
        ``runtime.compiled_trees.compile_trees`` to check and load."""
        model = cls(
            name=registry.model_name,
            version=str(version),
            model=registry.load_lightgbm(version),
            interval=registry.interval(version),
        )
        if compiled_cache is not None:
            registry.fetch_compiled_trees(model.version, compiled_cache)
        return model

    def __post_init__(self) -> None:
        # The scorer feeds the booster category codes (0.2 ms per call instead of 9 ms
        # through pandas for one car). That means the same as the pandas categoricals only
        # for a booster fitted on the contract's features and category lists, which is
        # what `rentalstream train` registers; anything else is refused at load.
        booster = self.booster
        expected = [list(CATEGORICAL[name]) for name in CATEGORICAL_FEATURES]
        if tuple(booster.feature_name()) != FEATURES or booster.pandas_categorical != expected:
            raise IncompatibleModel(
                f"{self.name} v{self.version} was not fitted on training/features.py's features and "
                "category lists; retrain it with `rentalstream train`"
            )

    @property
    def booster(self) -> Any:
        return self.model.booster_

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
