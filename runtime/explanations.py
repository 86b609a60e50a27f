"""Explanations of prices from a LightGBM booster's exact tree contributions, and the
global importance of a version (mean absolute contribution per feature).

TreeSHAP is slow on this model: ~10 ms of a core per car with the champion's 1,787
trees, ~70x its prediction through LightGBM and ~740x through the compiled trees
(``benchmarks/explanation_cost.py``). So prices are explained when someone asks
(``/predict?explain=true``, ``rentalstream explain``), never for every stored price
(docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from schemas.cars import CarFeatures
from schemas.explanations import Contribution, Explanation, in_cents
from schemas.features import FEATURES, feature_codes


def explain(
    booster: Any, version: str, cars: Sequence[CarFeatures], prices: Sequence[float], threads: int = 1
) -> list[Explanation]:
    """The explanation of each car's price (``prices``, as served: rounded to cents) by
    ``booster`` (version ``version``). Raises ``CentsDoNotAddUp`` for a price this booster
    does not give that car."""
    if not cars:
        return []
    contributions = exact_contributions(booster, feature_codes(cars), threads)
    return [_explanation(car, row, price, version) for car, row, price in zip(cars, contributions, prices, strict=True)]


def exact_contributions(booster: Any, matrix: Any, threads: int = 1) -> np.ndarray:
    """One row per row of ``matrix`` (anything the booster predicts on: ``feature_codes``
    of some cars, or the training DataFrame): the contribution of each feature of
    ``FEATURES``, then the base value."""
    return np.asarray(booster.predict(matrix, pred_contrib=True, num_threads=threads), dtype=np.float64)


def mean_absolute_contributions(booster: Any, matrix: Any, threads: int = 0) -> dict[str, float]:
    """Global importance: each feature's mean absolute contribution in euros over the rows
    of ``matrix`` (as ``exact_contributions`` takes it), largest first."""
    contributions = exact_contributions(booster, matrix, threads)
    means = np.abs(contributions[:, : len(FEATURES)]).mean(axis=0)
    return dict(sorted(zip(FEATURES, means.round(4).tolist(), strict=True), key=lambda item: -item[1]))


def _explanation(car: CarFeatures, row: np.ndarray, price: float, version: str) -> Explanation:
    base, euros = in_cents(float(row[-1]), row[:-1].tolist(), price)
    contributions = [
        Contribution(feature=name, value=getattr(car, name), euros=value)
        for name, value in zip(FEATURES, euros, strict=True)
    ]
    contributions.sort(key=lambda c: abs(c.euros), reverse=True)
    return Explanation(price_per_day=price, base_value=base, contributions=contributions, model_version=version)
