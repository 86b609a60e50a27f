"""Train a version's error estimator (``schemas.error_estimates``) on its cross-validation,
and measure how well it estimates the MAE of data it did not see.

The estimator learns, from the price model's features and price, the absolute error the
model made on each row when that row was held out (the out-of-fold predictions of the
protocol's folds). Its L2 objective makes it estimate the *mean* absolute error of cars
like the one priced, so the mean of its estimates over a window estimates that window's
MAE.

``fold_check`` measures it the same way the price model is measured: for each held-out
fold, an estimator trained on the other folds' out-of-fold errors estimates the fold's
MAE, which is then compared with the fold's realised MAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightgbm
import numpy as np
import pandas as pd

from schemas.error_estimates import ERROR_FEATURES, PRICE_FEATURE

SEED = 42
# Small on purpose: it is applied to every price the scorer gives, and it learns from
# ~4,800 noisy absolute errors. At least 40 rows per leaf keeps it from learning single cars.
ERROR_MODEL_PARAMS = {
    "objective": "regression",
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 40,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "random_state": SEED,
    "n_jobs": 2,
    "verbose": -1,
}


@dataclass(frozen=True)
class FoldCheck:
    """Per held-out fold: its realised MAE and the MAE estimated for it."""

    realised_mae: list[float]
    estimated_mae: list[float]

    @property
    def gaps(self) -> list[float]:
        return [e - r for e, r in zip(self.estimated_mae, self.realised_mae, strict=True)]

    def metrics(self) -> dict[str, float]:
        return {
            "cv_estimated_mae_mean": float(np.mean(self.estimated_mae)),
            "cv_estimated_mae_gap_mean": float(np.mean(self.gaps)),
            "cv_estimated_mae_gap_max": float(np.max(np.abs(self.gaps))),
        }


def error_matrix(matrix: pd.DataFrame, prices: Sequence[float] | np.ndarray) -> pd.DataFrame:
    """The estimator's training matrix: the price model's, with the price as the last column."""
    with_price = matrix.copy()
    with_price[PRICE_FEATURE] = np.asarray(prices, dtype=np.float64)
    assert tuple(with_price.columns) == ERROR_FEATURES
    return with_price


def fit_error_model(matrix: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray) -> lightgbm.LGBMRegressor:
    """An estimator of |actual - predicted| from the features and the prediction
    (``predicted``: out-of-fold, so the errors are the ones of unseen cars)."""
    errors = np.abs(np.asarray(actual, dtype=np.float64) - np.asarray(predicted, dtype=np.float64))
    return lightgbm.LGBMRegressor(**ERROR_MODEL_PARAMS).fit(error_matrix(matrix, predicted), errors)


def estimate(model: lightgbm.LGBMRegressor, matrix: pd.DataFrame, prices: np.ndarray) -> np.ndarray:
    """Each price's estimated absolute error (never below zero)."""
    return np.maximum(model.predict(error_matrix(matrix, prices)), 0.0)


def fold_check(
    matrix: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray, folds: Sequence[np.ndarray]
) -> FoldCheck:
    """The estimated against the realised MAE of each held-out fold (see the module)."""
    actual = np.asarray(actual, dtype=np.float64)
    realised, estimated = [], []
    for held_out in folds:
        others = np.setdiff1d(np.arange(len(actual)), held_out)
        model = fit_error_model(matrix.iloc[others], actual[others], predicted[others])
        realised.append(float(np.mean(np.abs(actual[held_out] - predicted[held_out]))))
        estimated.append(float(np.mean(estimate(model, matrix.iloc[held_out], predicted[held_out]))))
    return FoldCheck(realised, estimated)
