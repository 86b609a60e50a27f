"""What a retrain learns from: the reference table and the recent labelled price
requests, mixed (``labelled_requests``, ``mixed_table``, ``run_tags``);
``training.retrainer`` decides when, and registers the result as the challenger with
``train.train_and_register``. The window, the share and the minimum are the retrainer's
settings (``RetrainerSettings``).

- **Reference:** the cleaned pricing table, the same one ``rentalstream train`` uses.
- **Recent labelled events:** the price requests whose true price came back
  (``listed_price_per_day`` in ``prices``), each car as it was asked about
  (``price_requests.car``), newest first, up to ``window`` of them. A car asked about
  twice at the same true price counts once; otherwise its copies would sit on both
  sides of a cross-validation fold and flatter the figures.
- **Mix:** the recent rows carry ``recent_share`` of the total weight, 0.7 by default
  (70% recent, 30% historical). Every row of a part has the same weight, and the
  weights average 1. A few hundred recent rows thus outweigh 4,840 historical ones
  without discarding them: the model leans to what moved where it saw it move, and
  keeps the rest of the table.

The version is cross-validated on the mixed table (the protocol's folds, each fit
weighted, every held-out row counted once), so its figures are tagged with their own
protocol (``RETRAIN_PROTOCOL``) and never compared with a reference-table champion's.
Whether it prices better is for the live traffic to show: ``rentalstream compare``
and ``promote --if-better``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from runtime.settings import RetrainerSettings
from schemas import tables
from schemas.cars import CarFeatures
from schemas.features import FEATURES
from training.features import TARGET
from training.train import PROTOCOL

RETRAIN_PROTOCOL = f"{PROTOCOL}+recent-labelled"


class NotEnoughLabels(RuntimeError):
    """Fewer recent labelled events than a retrain needs: nothing new to learn from."""


@dataclass(frozen=True)
class RetrainData:
    table: pd.DataFrame  # FEATURES and TARGET, reference rows first
    weights: np.ndarray
    reference_rows: int
    recent_rows: int


def labelled_requests(engine: Engine, window: int) -> pd.DataFrame:
    """The newest ``window`` price requests whose true price is known: each car's
    features and its true price (``TARGET``), newest first."""
    query = (
        select(tables.price_requests.c.car, tables.prices.c.listed_price_per_day)
        .join(tables.prices, tables.prices.c.price_id == tables.price_requests.c.request_id)
        .where(tables.prices.c.listed_price_per_day.isnot(None))
        .order_by(tables.prices.c.event_time.desc())
        .limit(window)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return cars_with_prices((car, price) for car, price in rows)


def cars_with_prices(rows: Iterable[tuple[Mapping, float]]) -> pd.DataFrame:
    """A training table from (car as stored, true price) pairs, through the car contract
    (spellings made canonical, as the reference table's)."""
    records = [{**CarFeatures.model_validate(car).model_dump(), TARGET: float(price)} for car, price in rows]
    return pd.DataFrame(records, columns=[*FEATURES, TARGET])


def mixed_table(reference: pd.DataFrame, recent: pd.DataFrame, mix: RetrainerSettings) -> RetrainData:
    """The reference rows then the distinct recent ones, weighted so the recent ones
    carry ``mix.recent_share`` of the total; raises ``NotEnoughLabels``."""
    recent = recent.drop_duplicates(ignore_index=True)
    if len(recent) < mix.min_recent:
        raise NotEnoughLabels(
            f"{len(recent)} distinct labelled price requests in the newest {mix.window}; a retrain needs {mix.min_recent}"
        )
    table = pd.concat([reference[[*FEATURES, TARGET]], recent], ignore_index=True)
    total = len(table)
    weights = np.concatenate(
        [
            np.full(len(reference), (1 - mix.recent_share) * total / len(reference)),
            np.full(len(recent), mix.recent_share * total / len(recent)),
        ]
    )
    return RetrainData(table, weights, len(reference), len(recent))


def run_tags(data: RetrainData, trigger: Mapping[str, str]) -> dict[str, str]:
    """What set the retrain off and what it learned from, as tags of its MLflow run."""
    return {
        **{f"retrain_{k}": v for k, v in trigger.items()},
        "retrain_reference_rows": str(data.reference_rows),
        "retrain_recent_rows": str(data.recent_rows),
    }
