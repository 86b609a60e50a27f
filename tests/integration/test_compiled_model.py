"""The compiled trees (lleaves) price exactly as LightGBM does, are compiled once per
model, travel with a registered version, and a compiled object that is not the model's
is refused."""

import asyncio
import shutil
from pathlib import Path

import lightgbm
import numpy as np
import pytest

from runtime.compiled_trees import COMPILED_ARTIFACTS, CompileFailed, cache_paths, compile_trees, platform_folder
from runtime.prepared_versions import PreparedVersion, prepare
from runtime.registry import Registry
from runtime.registry_process import RegistryProcess
from schemas.cars import CarFeatures
from schemas.features import FEATURES, feature_codes
from scorer.pricing import PriceModel
from training.features import TARGET, build_features, read_pricing
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
    served = PriceModel(name="m", version="1", booster=model.booster_).with_compiled(compiled).price_per_day(cars)
    assert served == [round(float(p), 2) for p in expected]
    assert np.max(np.abs(compiled.predict(feature_codes(cars)) - expected)) < 1e-9
    # A large batch is split over the cores, a small one is not: both price alike.
    for batch in (cars[:1], cars[:499], cars[:500], cars[:2001]):
        assert np.max(np.abs(compiled.predict(feature_codes(batch)) - expected[: len(batch)])) < 1e-9


def test_a_model_is_compiled_once_and_a_foreign_object_is_refused(pricing_csv, tmp_path):
    model, _ = small_model(pricing_csv, trees=20, seed=2)
    first = asyncio.run(compile_trees(model.booster_, tmp_path))
    stamp = first.path.stat().st_mtime_ns
    again = asyncio.run(compile_trees(model.booster_, tmp_path))
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp  # from the cache
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".checked", ".o", ".txt"]

    other, _ = small_model(pricing_csv, trees=20, seed=3)
    _, other_object = cache_paths(tmp_path, other.booster_.model_to_string())
    shutil.copy(first.path, other_object)  # a stale or foreign object under the other model's name
    with pytest.raises(CompileFailed, match="differ from the booster"):
        asyncio.run(compile_trees(other.booster_, tmp_path))


def test_a_registered_version_carries_its_compiled_trees_and_a_scorer_loads_them_without_compiling(
    mlflow_registry, pricing_csv, tmp_path
):
    """Registration compiled the champion for this platform. A scorer with an empty cache
    gets, through its registry process, the very object logged with the version, checked
    against the booster, and prices every car of the pricing file as the booster does."""
    uri, trained = mlflow_registry
    registry = Registry(uri, "rentalstream-price")
    run_id = registry.client.get_model_version("rentalstream-price", trained.registered_version).run_id
    platforms = [a.path for a in registry.client.list_artifacts(run_id, COMPILED_ARTIFACTS)]
    assert platforms == [platform_folder()]
    booster = registry.load_lightgbm(trained.registered_version).booster_
    text_path, object_path = cache_paths(tmp_path / "fresh-cache", booster.model_to_string())
    logged = Path(registry.client.download_artifacts(run_id, f"{platform_folder()}/{object_path.name}", tmp_path))

    async def ask() -> PreparedVersion:
        process = RegistryProcess(uri, "rentalstream-price", tmp_path / "fresh-cache")
        try:
            return await process.prepare(await process.champion("champion"), compiled=True)
        finally:
            await process.close()

    prepared = asyncio.run(ask())
    assert (prepared.version, prepared.model_text, prepared.compiled_object) == (
        trained.registered_version,
        text_path,
        object_path,
    )
    assert object_path.read_bytes() == logged.read_bytes()  # fetched, not compiled again
    model = PriceModel.load("rentalstream-price", prepared)
    assert model.booster is None and model.compiled is not None

    table = read_pricing(pricing_csv)
    cars = [CarFeatures(**row) for row in table[list(FEATURES)].to_dict(orient="records")]
    expected = booster.predict(build_features(cars))  # LightGBM through pandas categoricals
    assert model.price_per_day(cars) == [round(float(p), 2) for p in expected]


class WithoutBoosters(Registry):
    def load_lightgbm(self, version: str):
        raise AssertionError("the booster was loaded")


def test_checked_compiled_trees_load_without_the_booster_until_the_object_changes(mlflow_registry, tmp_path):
    uri, trained = mlflow_registry
    version, cache = trained.registered_version, tmp_path / "cache"
    first = prepare(Registry(uri, "rentalstream-price"), version, cache, compiled=True)
    again = prepare(WithoutBoosters(uri, "rentalstream-price"), version, cache, compiled=True)
    assert again == first and first.compiled_object is not None

    with first.compiled_object.open("ab") as tampered:
        tampered.write(b"\0")
    with pytest.raises(AssertionError, match="the booster was loaded"):
        prepare(WithoutBoosters(uri, "rentalstream-price"), version, cache, compiled=True)
    checked_again = prepare(Registry(uri, "rentalstream-price"), version, cache, compiled=True)
    assert checked_again == first  # a trailing byte changes no prediction: checked against the booster, noted
    assert prepare(WithoutBoosters(uri, "rentalstream-price"), version, cache, compiled=True) == first
