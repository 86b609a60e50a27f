"""Why a price: the model's base value plus one contribution per feature, in euros,
summing to the price to the cent.

The contributions are the trees' exact ones (LightGBM's ``pred_contrib``, TreeSHAP), in
euros because the price model predicts euros per day. Rounded one by one, thirteen
contributions and a base value would miss the price by up to seven cents, so
``in_cents`` rounds them together (largest remainder): each stays within a cent of its
exact value, and their sum is the price served.

>>> [round(c, 2) for c in (3.336, 3.336, 3.336)]  # one by one: 10.02 €, for a price of 10.01 €
[3.34, 3.34, 3.34]
>>> in_cents(0.0, [3.336, 3.336, 3.336], 10.01)
(0.0, [3.34, 3.34, 3.33])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

IMPORTANCE_ARTIFACT = "importance.json"  # a version's mean absolute contribution per feature, in its training run
MAX_CENTS_APART = 1  # how far (in cents) the served price may be from the exact sum it is explained by


class Contribution(BaseModel):
    feature: str = Field(description="The car's field, as named in the request.")
    value: str | int | float | bool | None = Field(description="The car's value of that field.")
    euros: float = Field(description="How much this value moves the price per day away from the base value.")


class Explanation(BaseModel):
    """A price per day as ``base_value`` plus ``contributions``, largest first."""

    price_per_day: float
    base_value: float = Field(
        description="The model's price before it knows anything about the car: its average over the training data."
    )
    contributions: list[Contribution] = Field(
        description="One per feature, largest effect first; with the base value they sum to price_per_day."
    )
    model_version: str


class CentsDoNotAddUp(ValueError):
    """The price served is not the price the contributions make: not the same model or car."""


def in_cents(base: float, contributions: Sequence[float], price: float) -> tuple[float, list[float]]:
    """``base`` and ``contributions`` rounded to cents so that they sum to ``price`` (a price
    already rounded to cents), each moved by at most a cent: floor everything, then give
    the missing cents to the largest remainders.

    Raises ``CentsDoNotAddUp`` when the exact sum is more than ``MAX_CENTS_APART`` from
    ``price``: they would not explain it."""
    exact = [base * 100, *(c * 100 for c in contributions)]
    target = round(price * 100)
    if abs(sum(exact) - target) > MAX_CENTS_APART:
        raise CentsDoNotAddUp(f"the contributions sum to {sum(exact) / 100:.4f} €, not the price {price:.2f} €")
    floors = [math.floor(v) for v in exact]
    missing = target - sum(floors)  # 0 <= missing <= len(exact) + 1 given the check above
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - floors[i], reverse=True)
    cents = floors[:]
    for i in by_remainder[: max(missing, 0)]:
        cents[i] += 1
    for i in by_remainder[::-1][: max(-missing, 0)]:
        cents[i] -= 1
    return cents[0] / 100, [c / 100 for c in cents[1:]]
