"""The reference statistics logged with each model (``schemas.reference``): what the
drift monitor takes as normal for the model in production.

Numeric signals are summarised after clipping to their 1st and 99th percentiles, which
is how the monitor sees live values, so the two are measured on the same scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from schemas.cars import CATEGORICAL, EQUIPMENT, NUMERIC
from schemas.reference import Distribution, Histogram, ReferenceStats

CLIP_PERCENTILES = (1.0, 99.0)
HISTOGRAM_BINS = 20


def reference_stats(
    pricing: pd.DataFrame,
    target: str,
    predicted_price: Sequence[float],
    *,
    cv_mae: float,
    cv_rmse: float,
    delay_history: Iterable[Mapping],
) -> ReferenceStats:
    """Statistics of the training table (``pricing`` with its ``target`` column), the
    fitted model's prices on it, and the delay history's rows (``RentalEvent`` fields)."""
    history = pd.DataFrame(list(delay_history))
    return ReferenceStats(
        rows=len(pricing),
        numeric={name: distribution(pricing[name]) for name in NUMERIC},
        category_shares={
            **{name: category_shares(pricing[name], categories) for name, categories in CATEGORICAL.items()},
            **{name: {"true": float(pricing[name].astype(bool).mean())} for name in EQUIPMENT},
        },
        predicted_price=distribution(predicted_price),
        listed_price=distribution(pricing[target]),
        cv_mae=cv_mae,
        cv_rmse=cv_rmse,
        delays={
            checkin_type: distribution(group["delay_at_checkout_minutes"].dropna())
            for checkin_type, group in history.groupby("checkin_type")
        },
        conflict_share=conflict_share(history),
    )


def distribution(values: Iterable[float]) -> Distribution:
    """n, and mean, standard deviation and histogram of the values clipped to [1st, 99th]
    percentile.

    >>> d = distribution(range(101))
    >>> (d.n, d.low, d.high, d.mean)
    (101, 1.0, 99.0, 50.0)
    >>> d.histogram.edges[:3], round(d.histogram.shares[0] * 101), round(sum(d.histogram.shares), 9)
    ([1.0, 5.9, 10.8], 6, 1.0)
    """
    array = np.asarray(list(values), dtype=np.float64)
    low, high = np.percentile(array, CLIP_PERCENTILES)
    clipped = np.clip(array, low, high)
    return Distribution(
        n=len(array),
        mean=float(clipped.mean()),
        std=float(max(clipped.std(), 1e-9)),
        low=float(low),
        high=float(high),
        histogram=histogram(clipped, float(low), float(high)) if high > low else None,
    )


def histogram(clipped: np.ndarray, low: float, high: float) -> Histogram:
    """Shares of ``clipped`` in ``HISTOGRAM_BINS`` equal bins from ``low`` to ``high``."""
    counts, edges = np.histogram(clipped, bins=HISTOGRAM_BINS, range=(low, high))
    return Histogram(edges=[round(float(e), 6) for e in edges], shares=(counts / len(clipped)).tolist())


def category_shares(values: pd.Series, categories: Sequence[str]) -> dict[str, float]:
    """Share of each category of the contract (0 for one absent from ``values``)."""
    counts = values.value_counts()
    return {category: float(counts.get(category, 0) / len(values)) for category in categories}


def conflict_share(history: pd.DataFrame) -> float:
    """Among rentals whose previous rental's delay and planned gap are known, the share
    where that delay exceeded the gap (the driver waited)."""
    previous = history.set_index("rental_id")["delay_at_checkout_minutes"]
    linked = history.dropna(subset=["previous_ended_rental_id", "planned_gap_minutes"])
    previous_delay = linked["previous_ended_rental_id"].map(previous)
    known = previous_delay.notna()
    waiting = previous_delay[known] - linked.loc[known, "planned_gap_minutes"]
    return float((waiting > 0).mean()) if len(waiting) else 0.0
