"""The compiled trees (lleaves) price exactly as LightGBM does, are compiled once per
model, and a compiled object that is not the model's is refused."""

import asyncio
import shutil

import lightgbm
import numpy as np
import pytest

from schemas.cars import CarFeatures
from scorer.compiled import CompileFailed, cache_paths, compile_trees
from scorer.pricing import PriceModel
from training.features import FEATURES, TARGET, build_features, feature_codes, read_pricing
from training.train import LIGHTGBM_PARAMS

pytestmark = pytest.mark.integration


def small_model(pricing_csv, trees: int, seed: int) -> tuple[lightgbm.LGBMRegressor, object]:
    """The champion's recipe with fewer trees (compiling 600 takes ~30 s)."""
    table = read_pricing(pricing_csv)
    params = {**LIGHTGBM_PARAMS, "n_estimators": trees, "random_state": seed}
    return lightgbm.LGBMRegressor(**params).fit(build_features(table), table[TARGET]), table


def test_compiled_trees_price_every_car_as_lightgbm_does(pricing_csv, tmp_path):
    model, table = small_model(pricing_csv, trees=40, seed=1)
    compiled = asyncio.run(compile_trees(model.booster_, tmp_path))

    cars = [CarFeatures(**row) for row in table[list(FEATURES)].to_dict(orient="records")]
    cars.append(CarFeatures(**{**cars[0].model_dump(), "model_key": "Unheard-of brand"}))  # priced as missing
    expected = model.predict(build_features(cars))  # LightGBM through pandas categoricals
    served = PriceModel(name="m", version="1", model=model).with_compiled(compiled).price_per_day(cars)
    assert served == [round(float(p), 2) for p in expected]
    assert np.max(np.abs(compiled.predict(feature_codes(cars)) - expected)) < 1e-9


def test_a_model_is_compiled_once_and_a_foreign_object_is_refused(pricing_csv, tmp_path):
    model, _ = small_model(pricing_csv, trees=20, seed=2)
    first = asyncio.run(compile_trees(model.booster_, tmp_path))
    stamp = first.path.stat().st_mtime_ns
    again = asyncio.run(compile_trees(model.booster_, tmp_path))
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp  # from the cache
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".o", ".txt"]

    other, _ = small_model(pricing_csv, trees=20, seed=3)
    _, other_object = cache_paths(tmp_path, other.booster_.model_to_string())
    shutil.copy(first.path, other_object)  # a stale or foreign object under the other model's name
    with pytest.raises(CompileFailed, match="differ from the booster"):
        asyncio.run(compile_trees(other.booster_, tmp_path))
