"""The price model's input matrix, as training and serving both build it: the columns of
``FEATURES`` in that order, each category as its code in the contract's fixed list.

Kept free of pandas (``training.features`` builds the same matrix as a DataFrame for
training), so a serving process that only prices never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.cars import CATEGORICAL, EQUIPMENT, NUMERIC, CarFeatures

FEATURES: tuple[str, ...] = (*NUMERIC, *CATEGORICAL, *EQUIPMENT)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(CATEGORICAL)
CATEGORY_CODES = {
    name: {value: float(code) for code, value in enumerate(values)} for name, values in CATEGORICAL.items()
}


def feature_codes(cars: Sequence[CarFeatures]) -> np.ndarray:
    """The model matrix of ``cars`` as a float array: each category is its code in the
    fixed list, an unknown one NaN. That is exactly what LightGBM makes of the pandas
    categoricals of ``training.features.build_features``, so a booster fitted on those
    predicts the same on this, at a fraction of the cost (no DataFrame per call).

    >>> car = CarFeatures(model_key="Tesla", mileage=10, engine_power=300, fuel="electro",
    ...     paint_color="white", car_type="sedan", has_gps=True)
    >>> feature_codes([car]).tolist()
    [[10.0, 300.0, nan, 1.0, 9.0, 4.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    nan = float("nan")
    return np.array(
        [
            [
                *(float(getattr(car, name)) for name in NUMERIC),
                *(CATEGORY_CODES[name].get(getattr(car, name), nan) for name in CATEGORICAL),
                *(float(getattr(car, name)) for name in EQUIPMENT),
            ]
            for car in cars
        ],
        dtype=np.float64,
    ).reshape(len(cars), len(FEATURES))
