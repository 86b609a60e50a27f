"""runtime.registry.Registry asks its own registry, whatever MLflow's process-wide tracking
URI says: a service holds one Registry, and tests and tools may point MLflow elsewhere."""

import mlflow
import numpy as np
import pytest

from runtime.registry import MissingReference, NoChampion, Registry, UnknownVersion
from tests.helpers import reference_prices, register_small_model, registry_copy
from training.features import read_pricing

MODEL = "rentalstream-price"


@pytest.fixture
def elsewhere(tmp_path):
    """MLflow's process-wide tracking URI pointed at an empty registry, put back after."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    yield mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(before)


def test_a_registry_reads_and_moves_its_own_aliases_whatever_the_process_wide_uri(
    mlflow_registry, pricing_csv, tmp_path, elsewhere
):
    uri = registry_copy(mlflow_registry, tmp_path)
    v1 = mlflow_registry[1].champion_version
    pricing = read_pricing(pricing_csv)
    v2, small = register_small_model(uri, pricing, "small")
    mlflow.set_tracking_uri(elsewhere)  # register_small_model logs through MLflow's fluent API
    registry = Registry(uri, MODEL)

    assert registry.champion("champion") == v1
    assert registry.version_behind("challenger") is None
    cars = pricing.head(20)
    np.testing.assert_allclose(reference_prices(registry.load_lightgbm(v2), cars), reference_prices(small, cars))
    assert registry.interval(v1) is not None and registry.reference(v1).cv_mae > 0
    assert registry.interval(v2) is None  # registered without one
    with pytest.raises(MissingReference):
        registry.reference(v2)

    assert registry.promote(v2, "challenger", "challenger") == ({"challenger": None}, {"challenger": v2})
    before, after = registry.promote(v2, "champion", "challenger")  # promoting the challenger ends the challenge
    assert (before, after) == ({"champion": v1, "challenger": v2}, {"champion": v2, "challenger": None})
    with pytest.raises(UnknownVersion, match=f"versions: {v2}, {v1}"):
        registry.promote("99", "champion", "challenger")
    assert registry.retire("champion") == v2
    with pytest.raises(NoChampion, match="run `rentalstream train` first"):
        registry.champion("champion")

    assert mlflow.get_tracking_uri() == elsewhere  # nothing above moved it
    assert Registry(elsewhere, MODEL).version_behind("champion") is None
