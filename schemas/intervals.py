"""The price interval a model version is served with, calibrated at training time and
logged to MLflow next to the model (``INTERVAL_ARTIFACT`` in the training run).

The interval is multiplicative: ``[price × lower_ratio, price × upper_ratio]``, where the
ratios are the 10% and 90% quantiles of *true price / predicted price* over the
out-of-fold predictions of cross-validation (split conformal on ratios). A ratio, not an
offset in euros, because the error of a price grows with the price: a 400 € car is not
priced to within the same euros as a 60 € one.

>>> interval = PriceInterval(coverage=0.8, lower_ratio=0.85, upper_ratio=1.2, fold_coverage=[0.8])
>>> interval.around(100.0)
(85.0, 120.0)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

INTERVAL_ARTIFACT = "price_interval.json"


class PriceInterval(BaseModel):
    model_config = ConfigDict(frozen=True)

    coverage: float = Field(gt=0, lt=1, description="The share of true prices the interval is meant to hold.")
    lower_ratio: float = Field(gt=0)
    upper_ratio: float = Field(gt=0)
    fold_coverage: list[float] = Field(
        description="The share of true prices inside the interval on each held-out fold, with ratios "
        "calibrated on the other folds' out-of-fold predictions."
    )
    method: str = "split-conformal on true/predicted ratios of 5-fold out-of-fold predictions"

    @model_validator(mode="after")
    def _ordered(self) -> PriceInterval:
        if self.lower_ratio > self.upper_ratio:
            raise ValueError("lower_ratio must not exceed upper_ratio")
        return self

    def around(self, price: float) -> tuple[float, float]:
        """The interval around a point price, in euros, rounded to the cent like the price."""
        return round(price * self.lower_ratio, 2), round(price * self.upper_ratio, 2)
