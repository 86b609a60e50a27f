"""How well a version's error estimator (``training.error_model``) estimates the MAE of
windows of cars it never saw, under the simulator's shifts: the evidence behind the
``prices/estimated_error`` signal (benchmarks/error_estimates.py prints it; a test
holds it).

Nested cross-validation: the pricing table is split into outer folds; for each, a price
model and its error estimator are trained exactly as registration trains them (the
protocol's 5-fold cross-validation on the outer training rows gives the out-of-fold
errors the estimator learns from), and both are applied to the outer fold's rows only.
So every row is priced, and its error estimated, by models that never saw it, and its
realised error is known.

A shifted stream is a sequence of row draws, shifted as the simulator shifts a listing
(``producers.simulator``): a value shift changes each drawn car or its real price; a mix
shift draws some rows more often. Windows of consecutive draws then give a realised
and an estimated MAE each.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import RegressorMixin
from sklearn.model_selection import KFold

from producers.simulator import Shift, shift_car, shift_price
from schemas.cars import CarFeatures
from schemas.features import FEATURES
from training import error_model
from training.features import TARGET, build_features
from training.train import cross_validate


@dataclass(frozen=True)
class Window:
    realised_mae: float
    estimated_mae: float
    standard_error: float  # of the realised MAE: the errors' standard deviation / sqrt(n)


@dataclass
class HeldOut:
    """Every row of ``pricing`` with the outer fold that holds it out and that fold's models."""

    pricing: pd.DataFrame
    fold_of_row: np.ndarray
    models: list[tuple[RegressorMixin, object]]  # (price model, error estimator) per outer fold

    def window(self, rows: Sequence[int], shifts: Sequence[Shift]) -> Window:
        """The realised and estimated MAE of the cars of ``rows`` (repeats allowed), shifted."""
        rows = np.asarray(rows)
        cars = [shift_car(CarFeatures.model_validate(r), shifts) for r in self._records(rows)]
        truth = np.array([shift_price(p, shifts) for p in self.pricing[TARGET].to_numpy()[rows]])
        matrix = build_features(cars)
        prices, estimates = np.zeros(len(rows)), np.zeros(len(rows))
        for fold, (price_model, estimator) in enumerate(self.models):
            mine = np.flatnonzero(self.fold_of_row[rows] == fold)
            if len(mine):
                prices[mine] = price_model.predict(matrix.iloc[mine])
                estimates[mine] = error_model.estimate(estimator, matrix.iloc[mine], prices[mine])
        errors = np.abs(truth - prices)
        return Window(float(errors.mean()), float(estimates.mean()), float(errors.std() / np.sqrt(len(rows))))

    def _records(self, rows: np.ndarray) -> list[dict]:
        return self.pricing.iloc[rows][list(FEATURES)].to_dict(orient="records")


def held_out(
    pricing: pd.DataFrame, new_model: Callable[[], RegressorMixin], outer_folds: int = 5, seed: int = 7
) -> HeldOut:
    """Train each outer fold's models (see the module): ``outer_folds`` × 6 price model fits."""
    pricing = pricing.reset_index(drop=True)
    matrix, target = build_features(pricing), pricing[TARGET]
    fold_of_row = np.zeros(len(pricing), dtype=int)
    models = []
    for fold, (train, held) in enumerate(KFold(outer_folds, shuffle=True, random_state=seed).split(pricing)):
        fold_of_row[held] = fold
        inner = cross_validate("inner", new_model, matrix.iloc[train], target.iloc[train])
        estimator = error_model.fit_error_model(matrix.iloc[train], target.to_numpy()[train], inner.predicted)
        models.append((new_model().fit(matrix.iloc[train], target.iloc[train]), estimator))
    return HeldOut(pricing, fold_of_row, models)


def stream_rows(held: HeldOut, shifts: Sequence[Shift], draws: int, seed: int = 42) -> list[int]:
    """The rows a stream of ``draws`` price requests asks about: each row once in a seeded
    order (as the simulator deals listings) without a mix shift; with one, draws weighted
    by it, as the simulator draws them."""
    rng = random.Random(seed)
    rows = list(range(len(held.pricing)))
    mixes = [s for s in shifts if s.target.startswith("mix.")]
    if not mixes:
        rng.shuffle(rows)
        return rows[:draws]
    records = held._records(np.arange(len(rows)))
    cars = [CarFeatures.model_validate(r) for r in records]
    weights = [float(np.prod([mix.weight(car) for mix in mixes])) for car in cars]
    return rng.choices(rows, weights=weights, k=draws)


def windows(held: HeldOut, shifts: Sequence[Shift], size: int, count: int, seed: int = 42) -> list[Window]:
    """``count`` consecutive windows of ``size`` price requests of the shifted stream."""
    rows = stream_rows(held, shifts, size * count, seed)
    return [held.window(rows[i : i + size], shifts) for i in range(0, size * count, size)]
