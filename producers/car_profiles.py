"""Give every car of the delay history a car profile from the pricing dataset.

The delay history knows car ids, not cars, so each ``car_id`` is assigned one row of
``get_around_pricing_project.csv`` by a deterministic rule:

1. The pool is the pricing rows that pass the car contract (``CarFeatures``), in file
   order.
2. A car that was checked in with Getaround Connect at least once in the history gets
   a profile from the Connect cars of the pool (``has_getaround_connect`` true), so
   "Connect cars only" in the threshold simulator really means cars that have Connect;
   every other car draws from the whole pool.
3. Within its pool, car ``c`` gets row ``sha256(str(c)) mod len(pool)``: stable
   across runs, machines and row order of the history, and spread evenly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import polars as pl
from pydantic import ValidationError

from schemas.cars import CarFeatures

PRICE_COLUMN = "rental_price_per_day"


def read_profile_pool(pricing_csv: Path) -> list[tuple[CarFeatures, float]]:
    """(car, listed price per day) for every pricing row that passes the contract."""
    table = pl.read_csv(pricing_csv)
    pool = []
    for row in table.drop(table.columns[0]).iter_rows(named=True):
        price = row.pop(PRICE_COLUMN)
        try:
            pool.append((CarFeatures.model_validate(row), float(price)))
        except ValidationError:
            continue
    return pool


def assign_profiles(
    car_ids: Iterable[int],
    connect_car_ids: set[int],
    pool: list[tuple[CarFeatures, float]],
) -> dict[int, CarFeatures]:
    connect_pool = [car for car, _ in pool if car.has_getaround_connect]
    whole_pool = [car for car, _ in pool]
    profiles = {}
    for car_id in car_ids:
        candidates = connect_pool if car_id in connect_car_ids else whole_pool
        profiles[car_id] = candidates[profile_index(car_id, len(candidates))]
    return profiles


def profile_index(car_id: int, pool_size: int) -> int:
    digest = hashlib.sha256(str(car_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") % pool_size


def connect_cars(rows: Iterable[Mapping]) -> set[int]:
    return {row["car_id"] for row in rows if row["checkin_type"] == "connect"}
