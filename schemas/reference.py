"""What "normal" looked like for a model: statistics of its reference data, computed at
training time and logged to MLflow next to the model (``REFERENCE_ARTIFACT`` in the
training run). The drift monitor compares the live streams with them.

Car features and prices come from the cleaned pricing table the model was fitted on;
the delay and conflict figures come from the delay history the product was built on
(the model does not use them, but they are the operations' normal).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

REFERENCE_ARTIFACT = "reference.json"


class Histogram(BaseModel):
    """Shares of the values, clipped to [low, high], in equal bins between ``edges``."""

    model_config = ConfigDict(frozen=True)

    edges: list[float] = Field(min_length=2)
    shares: list[float]

    @model_validator(mode="after")
    def _a_share_per_bin(self) -> Histogram:
        if len(self.shares) != len(self.edges) - 1:
            raise ValueError(f"{len(self.edges)} edges make {len(self.edges) - 1} bins, but {len(self.shares)} shares")
        if any(b < a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("the edges must not decrease")
        return self


class Distribution(BaseModel):
    """A numeric signal in the reference data. The monitor clips live values to
    [low, high] (the 1st and 99th percentiles) and measures them in reference standard
    deviations, so one detector setting fits every signal and a single absurd value
    cannot pass for a change of the whole stream."""

    model_config = ConfigDict(frozen=True)

    n: int = Field(ge=0)
    mean: float
    std: float = Field(gt=0)
    low: float
    high: float
    histogram: Histogram | None = Field(
        None, description="Logged since issue 22 (the drift report draws it); None for older versions"
    )


class ReferenceStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    rows: int = Field(description="Cars in the training table")
    numeric: dict[str, Distribution] = Field(description="mileage, engine_power")
    category_shares: dict[str, dict[str, float]] = Field(
        description="Per categorical field, the share of each category; per equipment field, the share of 'true'"
    )
    predicted_price: Distribution = Field(description="The fitted model's prices on its training cars")
    listed_price: Distribution = Field(description="The real prices of the training cars")
    cv_mae: float = Field(gt=0, description="Cross-validated mean absolute error, euros per day")
    cv_rmse: float = Field(gt=0)
    delays: dict[str, Distribution] = Field(description="Delay at checkout (minutes) per check-in type, history")
    conflict_share: float = Field(
        ge=0, le=1, description="Share of linked rentals whose previous rental made the driver wait, history"
    )
