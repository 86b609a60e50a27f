"""The scorer refuses a model whose categories would not mean what its codes say."""

import lightgbm
import pandas as pd
import pytest

from schemas.cars import CarFeatures
from schemas.features import FEATURES
from scorer.pricing import IncompatibleModel, PriceModel
from tests.helpers import SAMPLE_CAR
from training.features import build_features


def fitted(matrix: pd.DataFrame) -> lightgbm.LGBMRegressor:
    return lightgbm.LGBMRegressor(n_estimators=2, min_child_samples=1, verbose=-1).fit(matrix, [50.0, 70.0] * 2)


def four_cars() -> pd.DataFrame:
    return build_features(
        [
            CarFeatures(**{**SAMPLE_CAR, "mileage": m, "fuel": f})
            for m, f in [(1, "diesel"), (9, "petrol"), (5, "diesel"), (7, "petrol")]
        ]
    )


def test_a_model_fitted_on_other_category_lists_is_refused_at_load():
    matrix = four_cars()
    matrix["fuel"] = matrix["fuel"].cat.set_categories(["petrol", "diesel"])  # codes swapped
    with pytest.raises(IncompatibleModel, match="retrain"):
        PriceModel("m", "1", booster=fitted(matrix).booster_)


def test_a_model_fitted_on_other_features_is_refused_at_load():
    matrix = four_cars()[list(reversed(FEATURES))]
    with pytest.raises(IncompatibleModel):
        PriceModel("m", "1", booster=fitted(matrix).booster_)


def test_a_model_fitted_on_the_training_features_is_accepted():
    assert PriceModel("m", "1", booster=fitted(four_cars()).booster_).price_per_day([]) == []
