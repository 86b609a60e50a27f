"""Calibrate the served price interval (``schemas.intervals.PriceInterval``) from the
out-of-fold predictions of cross-validation, and measure its coverage fold by fold.

For each held-out fold, the ratios are calibrated on the *other* folds' out-of-fold
predictions only and the coverage is counted on the held-out fold, so no fold's
coverage is measured with ratios that saw it. The served ratios are calibrated on every
fold's out-of-fold predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.intervals import PriceInterval

COVERAGE = 0.8


def ratio_quantiles(actual: np.ndarray, predicted: np.ndarray, coverage: float = COVERAGE) -> tuple[float, float]:
    """The (1 - coverage)/2 and (1 + coverage)/2 quantiles of true/predicted price."""
    ratios = np.asarray(actual, dtype=float) / np.maximum(np.asarray(predicted, dtype=float), 1.0)
    tail = (1 - coverage) / 2
    return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))


def calibrate(
    actual: np.ndarray, predicted: np.ndarray, folds: Sequence[np.ndarray], coverage: float = COVERAGE
) -> PriceInterval:
    """``predicted`` holds the out-of-fold prediction of every row; ``folds`` the row
    indices of each held-out fold."""
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    fold_coverage = []
    for held_out in folds:
        others = np.setdiff1d(np.arange(len(actual)), held_out)
        low, high = ratio_quantiles(actual[others], predicted[others], coverage)
        pred = np.maximum(predicted[held_out], 1.0)
        inside = (actual[held_out] >= pred * low) & (actual[held_out] <= pred * high)
        fold_coverage.append(float(inside.mean()))
    low, high = ratio_quantiles(actual, predicted, coverage)
    return PriceInterval(coverage=coverage, lower_ratio=low, upper_ratio=high, fold_coverage=fold_coverage)
