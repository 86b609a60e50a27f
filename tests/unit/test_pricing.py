"""The scorer refuses a model whose categories would not mean what its codes say."""

from dataclasses import replace

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


def test_an_error_estimator_is_applied_to_codes_as_to_its_training_frame_and_one_off_the_contract_is_left_out(
    tmp_path,
):
    from runtime.prepared_versions import PreparedVersion
    from scorer.pricing import load_error_estimator

    matrix, prices = four_cars(), [50.0, 70.0, 55.0, 65.0]
    with_price = matrix.assign(price_per_day=prices)
    estimator = lightgbm.LGBMRegressor(n_estimators=3, min_child_samples=1, verbose=-1).fit(with_price, [5, 9, 6, 8])
    good, off = tmp_path / "good.txt", tmp_path / "off.txt"
    estimator.booster_.save_model(good)
    fitted(matrix).booster_.save_model(off)  # no price column: not an estimator of this contract
    model = PriceModel("m", "1", booster=fitted(matrix).booster_)

    prepared = PreparedVersion(version="1", model_text=good, error_model=good)
    loaded = replace(model, error_estimator=load_error_estimator("m", prepared))
    cars = [CarFeatures(**{**SAMPLE_CAR, "mileage": m, "fuel": f}) for m, f in [(1, "diesel"), (9, "petrol")]]
    expected = [round(max(e, 0.0), 2) for e in estimator.predict(with_price.iloc[:2])]
    assert loaded.estimate_errors(cars, prices[:2]) == expected
    assert load_error_estimator("m", PreparedVersion(version="1", model_text=off, error_model=off)) is None
    assert load_error_estimator("m", PreparedVersion(version="1", model_text=off)) is None
    assert model.estimate_errors(cars, prices[:2]) is None  # a version without an estimator
