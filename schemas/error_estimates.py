"""The error estimator a model version is served with: a small LightGBM model that
predicts the absolute error of each price before its true price is known (Direct Loss
Estimation, as NannyML names it), trained at registration on the cross-validation's
out-of-fold absolute errors (``training.error_model``) and logged next to the model
(``ERROR_MODEL_ARTIFACT``, LightGBM's model text).

Its inputs are the price model's (``schemas.features``) and the price the model gave,
last. Like the price model, it is fed category codes, never a DataFrame.

What it can see, and what it cannot: it learns where, among cars like the training
table's, the model tends to be wrong. A change in *which* cars are priced moves the
estimate (covariate shift). A change in what a given car is worth (the world's prices
move, or a feature's meaning does) leaves the car looking the same, so the estimate stays
where it was: that is what the realised error, where true prices come back, and the
feature drift detectors are for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.cars import CarFeatures
from schemas.features import FEATURES, feature_codes

ERROR_MODEL_ARTIFACT = "error_model.txt"
PRICE_FEATURE = "price_per_day"
ERROR_FEATURES: tuple[str, ...] = (*FEATURES, PRICE_FEATURE)


def error_codes(cars: Sequence[CarFeatures], prices: Sequence[float]) -> np.ndarray:
    """The error estimator's input matrix: the price model's, then each car's price.

    >>> car = CarFeatures(model_key="Tesla", mileage=10, engine_power=300, fuel="electro",
    ...     paint_color="white", car_type="sedan", has_gps=True)
    >>> error_codes([car], [212.5]).tolist()[0][-2:]
    [0.0, 212.5]
    """
    return np.column_stack([feature_codes(cars), np.asarray(prices, dtype=np.float64)])
