import numpy as np
import pandas as pd

from schemas.cars import CarFeatures
from schemas.features import FEATURES
from tests.helpers import SAMPLE_CAR
from training.features import build_features, read_pricing

CAR = SAMPLE_CAR


def test_cleaning_drops_exactly_the_rows_outside_the_contract(pricing_csv):
    raw = pd.read_csv(pricing_csv, index_col=0)
    broken = (raw.mileage < 0) | (raw.mileage > 1_000_000) | (raw.engine_power <= 0)
    cleaned = read_pricing(pricing_csv)
    assert broken.sum() == 3
    assert len(cleaned) == len(raw) - broken.sum()
    assert cleaned["rental_price_per_day"].sum() == raw.loc[~broken, "rental_price_per_day"].sum()


def test_features_have_the_training_order_and_types():
    matrix = build_features([CarFeatures(**CAR)])
    assert tuple(matrix.columns) == FEATURES
    assert isinstance(matrix["fuel"].dtype, pd.CategoricalDtype)


def test_a_category_has_the_same_code_whatever_else_is_in_the_batch():
    alone = build_features([CarFeatures(**{**CAR, "model_key": "Porsche"})])
    mixed = build_features([CarFeatures(**{**CAR, "model_key": m}) for m in ("Audi", "Porsche")])
    assert alone["model_key"].cat.codes[0] == mixed["model_key"].cat.codes[1]
    assert list(alone["model_key"].cat.categories) == list(mixed["model_key"].cat.categories)


def test_unknown_brand_becomes_a_missing_category():
    matrix = build_features([CarFeatures(**{**CAR, "model_key": "Tesla"})])
    assert matrix["model_key"].isna().all()
    assert np.isfinite(matrix["mileage"]).all()
