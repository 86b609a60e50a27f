"""The champion price model, loaded once from the MLflow registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rentalstream.registry import version_behind_alias
from schemas.cars import CarFeatures
from training.features import build_features


class NoChampion(RuntimeError):
    pass


@dataclass(frozen=True)
class PriceModel:
    name: str
    version: str
    model: Any  # the native LightGBM flavour: a fitted LGBMRegressor

    @classmethod
    def load(cls, tracking_uri: str, name: str, alias: str = "champion") -> PriceModel:
        import mlflow

        version = version_behind_alias(tracking_uri, name, alias)
        if version is None:
            raise NoChampion(
                f"model {name!r} has no {alias!r} alias in {tracking_uri}; "
                "run `rentalstream train` first"
            )
        # Load the exact version, not the alias, so a concurrent promotion cannot
        # make the recorded version differ from the loaded one.
        model = mlflow.lightgbm.load_model(f"models:/{name}/{version}")
        return cls(name=name, version=str(version), model=model)

    def price_per_day(self, cars: Sequence[CarFeatures]) -> list[float]:
        if not cars:
            return []
        predicted = self.model.predict(build_features(cars))
        return [round(float(p), 2) for p in np.asarray(predicted)]
