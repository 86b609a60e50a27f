"""A registered price model version, loaded from the files ``RegistryProcess.prepare`` left
in the model cache: its compiled trees when they are there and checked, else its booster.

Neither MLflow nor pandas is imported here, and LightGBM only when a booster is loaded:
the price model's when there are no compiled trees (or to explain a price), and the
version's error estimator (``schemas.error_estimates``), a few hundred small trees that
the lean LightGBM applies to every batch.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from runtime import explanations
from runtime.compiled_trees import PARALLEL_FROM_ROWS, CompiledTrees, load_object
from runtime.prepared_versions import PreparedVersion, check_contract
from runtime.registry import IncompatibleModel
from schemas.cars import CATEGORICAL, CarFeatures
from schemas.error_estimates import ERROR_FEATURES, error_codes
from schemas.explanations import Explanation
from schemas.features import feature_codes
from schemas.intervals import PriceInterval

__all__ = ["IncompatibleModel", "PriceModel"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriceModel:
    """``booster`` (a ``lightgbm.Booster``) or ``compiled`` (the same trees as machine
    code), or both; the compiled trees price when they are there. ``model_text`` is where
    the booster can be read from to explain prices when only the compiled trees are loaded."""

    name: str
    version: str
    booster: Any | None = None
    compiled: CompiledTrees | None = None
    interval: PriceInterval | None = None  # None for versions trained before intervals existed
    model_text: Path | None = None
    error_estimator: Any | None = None  # a ``lightgbm.Booster`` (``schemas.error_estimates``); None: no estimates

    @classmethod
    def load(cls, name: str, prepared: PreparedVersion) -> PriceModel:
        """The version ``prepared``: its checked compiled trees, or else its booster (checked
        against the contract here), and its error estimator. Blocks for a second or so:
        call it in a thread."""
        compiled = load_object(prepared.compiled_object) if prepared.compiled_object is not None else None
        booster = None if compiled is not None else lean_lightgbm().Booster(model_file=str(prepared.model_text))
        return cls(
            name,
            prepared.version,
            booster=booster,
            compiled=compiled,
            interval=prepared.interval,
            model_text=prepared.model_text,
            error_estimator=load_error_estimator(name, prepared),
        )

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

    def estimate_errors(self, cars: Sequence[CarFeatures], prices: Sequence[float]) -> list[float] | None:
        """Each price's estimated absolute error in euros (``schemas.error_estimates``), or
        None when this version has no error estimator."""
        if self.error_estimator is None:
            return None
        if not cars:
            return []
        # One thread at every batch size: OpenMP's workers would spin after each call and
        # cost more CPU than the 200 small trees (~12 µs of a core per car on one thread).
        estimated = self.error_estimator.predict(error_codes(cars, prices), num_threads=1)
        return [round(max(e, 0.0), 2) for e in np.asarray(estimated, dtype=np.float64).tolist()]

    def explain(self, cars: Sequence[CarFeatures], prices: Sequence[float]) -> list[Explanation]:
        """Why each car got its price (as ``price_per_day`` gave it): the trees' exact
        contributions. ~10 ms of a core per car: call it in a thread, and only for the
        cars someone asked about. The first call reads the booster when only the compiled
        trees are loaded (~0.25 s, and ~45 MiB from then on: ``lean_lightgbm``)."""
        threads = 1 if len(cars) < PARALLEL_FROM_ROWS else 0  # as in price_per_day
        return explanations.explain(self._explainer, self.version, cars, prices, threads)

    @cached_property
    def _explainer(self) -> Any:
        if self.booster is not None:
            return self.booster
        if self.model_text is None:
            raise ValueError(f"{self.name} v{self.version}: no booster to explain prices with")
        return lean_lightgbm().Booster(model_file=str(self.model_text))


def load_error_estimator(name: str, prepared: PreparedVersion) -> Any | None:
    """``prepared``'s error estimator, or None (logged) when it has none or one not fitted on
    the contract: prices are then served without estimates, never refused."""
    if prepared.error_model is None:
        return None
    estimator = lean_lightgbm().Booster(model_file=str(prepared.error_model))
    expected = [list(values) for values in CATEGORICAL.values()]
    if tuple(estimator.feature_name()) != ERROR_FEATURES or estimator.pandas_categorical != expected:
        log.warning(
            "%s v%s: its error estimator was not fitted on the contract; serving without estimates",
            name,
            prepared.version,
        )
        return None
    return estimator


# LightGBM's optional integrations: not needed to price or explain a numpy matrix.
LIGHTGBM_EXTRAS = ("pandas", "sklearn", "dask", "pyarrow", "matplotlib", "graphviz", "cffi", "polars")


def lean_lightgbm() -> Any:
    """The ``lightgbm`` module, imported without its optional integrations unless they are
    loaded already: LightGBM imports pandas and scikit-learn when it finds them, which
    took 1.10 s and +158 MiB of RSS here, against 0.22 s and +21 MiB without
    (benchmarks/explanation_cost.py, docs/decisions.md). Each missing one reads as not installed to LightGBM, and only
    during this import: the process may import them later."""
    if "lightgbm" in sys.modules:
        return sys.modules["lightgbm"]
    blocked = [name for name in LIGHTGBM_EXTRAS if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # importing it now raises ModuleNotFoundError
    try:
        import lightgbm
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return lightgbm
