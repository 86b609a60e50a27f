"""Feature preparation for training: the same matrix as the scorer's
(``schemas.features.feature_codes``), as a DataFrame, so the two cannot disagree.

Cleaning rules for ``get_around_pricing_project.csv`` (``clean_pricing``):

1. Drop the unnamed index column.
2. Drop rows that break the car contract (``schemas.cars.CarFeatures``): negative
   mileage (one row, -64 km), mileage above 1,000,000 km (one row, 1,000,376 km),
   engine power of 0 hp (one row). These are recording errors, and the scorer would
   reject such cars anyway.
3. Drop rows whose price is not positive (none today; the rule guards new data).
4. Normalise category spellings through the contract (``Citroen`` == ``Citroën``).

``build_features`` turns cars (dicts, ``CarFeatures`` or a DataFrame) into the model's
matrix: the columns of ``FEATURES`` in that order, categories as pandas ``Categorical``
with the *fixed* category lists of the contract, so a category has the same code in
every batch whatever else the batch contains. An unknown brand becomes a missing value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from schemas.cars import CATEGORICAL, EQUIPMENT, NUMERIC, CarFeatures
from schemas.features import FEATURES

TARGET = "rental_price_per_day"


def clean_pricing(raw: pd.DataFrame) -> pd.DataFrame:
    """The training table: valid cars with a positive price, canonical spellings."""
    table = raw.drop(columns=[c for c in raw.columns if c.startswith("Unnamed")])
    table = table[table[TARGET] > 0]
    rows = []
    for record in table.to_dict(orient="records"):
        price = record.pop(TARGET)
        try:
            car = CarFeatures.model_validate(record)
        except ValidationError:
            continue
        rows.append({**car.model_dump(), TARGET: float(price)})
    return pd.DataFrame(rows, columns=[*FEATURES, TARGET])


def read_pricing(path: Path) -> pd.DataFrame:
    return clean_pricing(pd.read_csv(path))


def build_features(cars: pd.DataFrame | Iterable[CarFeatures | Mapping]) -> pd.DataFrame:
    """The model matrix for ``cars``: ``FEATURES`` in order, fixed categories."""
    if not isinstance(cars, pd.DataFrame):
        cars = pd.DataFrame(
            [c.model_dump() if isinstance(c, CarFeatures) else dict(c) for c in cars],
            columns=list(FEATURES),
        )
    matrix = pd.DataFrame(index=cars.index)
    for name in NUMERIC:
        matrix[name] = cars[name].astype("float64")
    for name, categories in CATEGORICAL.items():
        matrix[name] = pd.Categorical(cars[name], categories=list(categories))
    for name in EQUIPMENT:
        matrix[name] = cars[name].astype("int8")
    return matrix
