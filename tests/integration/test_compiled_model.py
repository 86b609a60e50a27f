"""The compiled trees (lleaves) price exactly as LightGBM does, are compiled once per
model, travel with a registered version, and a compiled object that is not the model's
is refused."""

import asyncio
import shutil

import lightgbm
import numpy as np
import pytest

from runtime.compiled_trees import COMPILED_ARTIFACTS, CompileFailed, cache_paths, compile_trees, platform_folder
from runtime.registry import Registry
from schemas.cars import CarFeatures
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


def test_a_registered_version_carries_its_compiled_trees_and_a_scorer_loads_them_without_compiling(
    mlflow_registry, pricing_csv, tmp_path
):
    """Registration compiled the champion for this platform; a scorer with an empty cache
    gets the object with the model, and loading it compiles nothing (the file is the
    one fetched, untouched) and prices every car of the pricing file as the booster does."""
    uri, trained = mlflow_registry
    registry = Registry(uri, "rentalstream-price")
    run_id = registry.client.get_model_version("rentalstream-price", trained.registered_version).run_id
    platforms = [a.path for a in registry.client.list_artifacts(run_id, COMPILED_ARTIFACTS)]
    assert platforms == [platform_folder()]

    cache = tmp_path / "fresh-cache"
    model = PriceModel.load_version(registry, trained.registered_version, cache)
    _, object_path = cache_paths(cache, model.booster.model_to_string())
    assert object_path.exists()
    fetched = (object_path.stat().st_ino, object_path.stat().st_mtime_ns)

    compiled = asyncio.run(compile_trees(model.booster, cache))
    assert compiled.path == object_path
    assert (object_path.stat().st_ino, object_path.stat().st_mtime_ns) == fetched  # loaded, not compiled again

    table = read_pricing(pricing_csv)
    cars = [CarFeatures(**row) for row in table[list(FEATURES)].to_dict(orient="records")]
    expected = model.model.predict(build_features(cars))  # LightGBM through pandas categoricals
    assert model.with_compiled(compiled).price_per_day(cars) == [round(float(p), 2) for p in expected]
