"""Why a stored price, worked out on demand, and how versions differ in what drives their
prices (global importance). Read by ``rentalstream explain``, ``rentalstream compare``
and the dashboard (the car of a price row picked there).

A stored price is explained with the booster of the version that served it and the car
it priced: a price request's own car, or, for a rental, the features stored for its car.
Those are the car's latest: if they changed after the rental was priced, its price is
no longer what they give, and ``explain_price`` says so rather than explain another price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from runtime.explanations import explain
from schemas.cars import CarFeatures
from schemas.explanations import IMPORTANCE_ARTIFACT, CentsDoNotAddUp, Explanation

PRICE_SQL = text("""
    SELECT p.price_id, p.price_per_day, p.model_name, p.model_version, p.rental_id, p.car_id,
           r.car AS requested_car, to_jsonb(c) AS stored_car
    FROM prices p
    LEFT JOIN price_requests r ON r.request_id = p.request_id
    LEFT JOIN cars c ON c.car_id = p.car_id
    WHERE p.price_id = :price_id
""")


class CannotExplain(LookupError):
    """The price is unknown, or its car is no longer what was priced."""


@dataclass(frozen=True)
class StoredPrice:
    price_id: str
    price_per_day: float
    model_version: str
    car_id: int | None
    car: CarFeatures


def stored_price(database_url: str, price_id: str) -> StoredPrice:
    """The stored price ``price_id`` and the car it priced (a request's own car, or the
    rental's car as stored now). Raises ``CannotExplain``."""
    from runtime.postgres.engines import read_rows

    [rows] = read_rows(database_url, PRICE_SQL.bindparams(price_id=price_id))
    if not rows:
        raise CannotExplain(f"no price {price_id!r} (a rental's is 'rental-<rental_id>', a request's its request id)")
    row = rows[0]
    features = row["requested_car"] or row["stored_car"]
    if features is None:
        raise CannotExplain(f"{price_id}: the car it priced is not stored")
    car = CarFeatures.model_validate({name: features.get(name) for name in CarFeatures.model_fields})
    return StoredPrice(price_id, row["price_per_day"], row["model_version"], row["car_id"], car)


def explain_price(database_url: str, registry: Any, price_id: str) -> Explanation:
    """The explanation of the stored price ``price_id``, with the booster of the version
    that served it (``registry``: a ``runtime.registry.Registry``). Raises ``CannotExplain``."""
    price = stored_price(database_url, price_id)
    booster = registry.load_lightgbm(price.model_version).booster_
    try:
        [explanation] = explain(booster, price.model_version, [price.car], [price.price_per_day])
    except CentsDoNotAddUp as error:
        raise CannotExplain(
            f"{price_id}: car {price.car_id}'s features have changed since v{price.model_version} priced it "
            f"({price.price_per_day:.2f} €), so they no longer explain that price ({error})"
        ) from error
    return explanation


def importance(registry: Any, version: str) -> dict[str, float] | None:
    """The global importance logged with ``version``; None for a version trained before it was."""
    return registry.artifact(version, IMPORTANCE_ARTIFACT)


def explanation_table(price_id: str, explanation: Explanation):
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"why {price_id} costs {explanation.price_per_day:.2f} € a day (v{explanation.model_version})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("feature")
    table.add_column("value")
    table.add_column("€", justify="right")
    table.add_row("base value", "", f"{explanation.base_value:.2f}")
    for c in explanation.contributions:
        table.add_row(c.feature, str(c.value), f"{c.euros:+.2f}")
    table.add_row("price per day", "", f"{explanation.price_per_day:.2f}")
    return table


def importance_table(versions: dict[str, dict[str, float] | None]):
    """Each feature's mean absolute contribution (€) for each version (label -> importance),
    in the first version's order, and how the last differs from the first."""
    from rich import box
    from rich.table import Table

    labels = list(versions)
    known = {label: imp for label, imp in versions.items() if imp is not None}
    compared = len(labels) >= 2 and labels[0] in known and labels[-1] in known
    table = Table(title="what drives the prices: mean |contribution| per feature", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("feature")
    for label in labels:
        table.add_column(f"{label} €", justify="right")
    if compared:
        table.add_column("change €", justify="right")
    if not known:
        table.caption = "none logged: these versions were trained before global importance was"
    features = list(next(iter(known.values()), {}))
    for feature in features:
        cells = [f"{known[label][feature]:.2f}" if label in known else "not logged" for label in labels]
        if compared:
            first, last = (known[label][feature] for label in (labels[0], labels[-1]))
            cells.append(f"{last - first:+.2f}")
        table.add_row(feature, *cells)
    return table
