"""Whether the challenger prices better than the champion, with a confidence interval.

The evidence is paired: on the price requests both versions priced and whose true price
is known (``listed_price_per_day``), the difference of their absolute errors, request by
request (challenger's minus champion's; negative is the challenger closer). Its mean is
the MAE difference, and a bootstrap over the requests (SciPy's BCa) gives its confidence
interval. ``rentalstream compare`` prints it; ``rentalstream promote --if-better``
promotes only when the whole interval is below zero.

Requests without a true price are weighed apart, on the errors each version's error
estimator expected of its own price (``schemas.error_estimates``): the same paired
bootstrap, marked "estimated errors". ``promote --if-better`` decides on the true prices
when there are enough of them (``MIN_PAIRS``), else on the estimated errors, and says
which. An estimate cannot see a change in what cars are worth (docs/monitoring.md), so
true prices, where they exist, always win.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from sqlalchemy import text

CONFIDENCE = 0.95
RESAMPLES = 10_000
MIN_PAIRS = 30  # fewer paired true prices say too little for a bootstrap interval

PAIRED_ERRORS_SQL = text("""
    SELECT abs(price_per_day - listed_price_per_day)            AS champion_error,
           abs(challenger_price_per_day - listed_price_per_day) AS challenger_error
    FROM prices
    WHERE model_version = :champion AND challenger_model_version = :challenger
      AND listed_price_per_day IS NOT NULL AND challenger_price_per_day IS NOT NULL
    ORDER BY price_id
""")
PAIRED_ESTIMATES_SQL = text("""
    SELECT estimated_error AS champion_error, challenger_estimated_error AS challenger_error
    FROM prices
    WHERE model_version = :champion AND challenger_model_version = :challenger
      AND listed_price_per_day IS NULL AND challenger_price_per_day IS NOT NULL
      AND estimated_error IS NOT NULL AND challenger_estimated_error IS NOT NULL
    ORDER BY price_id
""")
TRUE_PRICES, ESTIMATED_ERRORS = "true prices", "estimated errors"


@dataclass(frozen=True)
class Evidence:
    """The paired comparison of two versions on the true prices both were scored against."""

    champion: str
    challenger: str
    pairs: int
    champion_mae: float | None
    challenger_mae: float | None
    mean_difference: float | None  # challenger MAE - champion MAE, €
    low: float | None  # the confidence interval of mean_difference
    high: float | None
    confidence: float = CONFIDENCE
    basis: str = TRUE_PRICES  # or ESTIMATED_ERRORS: each version's estimate of its own error

    @property
    def challenger_better(self) -> bool:
        """The whole interval is below zero: the challenger's errors are smaller."""
        return self.high is not None and self.high < 0

    @property
    def decision(self) -> str:
        if self.low is None:
            return f"not enough evidence: {self.pairs} paired {self.basis}, {MIN_PAIRS} needed"
        if self.challenger_better:
            return "the challenger is better"
        if self.low > 0:
            return "the champion is better"
        return "no difference shown: the interval holds zero"

    def summary(self) -> str:
        """One line: the figures and what they say."""
        if self.low is None or self.mean_difference is None:
            return f"v{self.challenger} against v{self.champion}: {self.decision}"
        return (
            f"v{self.challenger} against v{self.champion} on {self.pairs:,} {self.basis}: MAE "
            f"{self.challenger_mae:.2f} € against {self.champion_mae:.2f} €, difference {self.mean_difference:+.2f} € "
            f"({self.confidence:.0%} CI {self.low:+.2f} to {self.high:+.2f}, paired bootstrap): {self.decision}"
        )

    def as_dict(self) -> dict:
        """The figures and, as ``verdict``, what they say."""
        return {**asdict(self), "verdict": self.decision}


def paired_evidence(
    champion: str,
    challenger: str,
    champion_errors: np.ndarray,
    challenger_errors: np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
    basis: str = TRUE_PRICES,
) -> Evidence:
    """The evidence from the two versions' absolute errors (true or estimated: ``basis``)
    on the same requests."""
    differences = np.asarray(challenger_errors, dtype=float) - np.asarray(champion_errors, dtype=float)
    pairs = len(differences)
    if pairs < MIN_PAIRS:
        maes = (float(np.mean(champion_errors)), float(np.mean(challenger_errors))) if pairs else (None, None)
        return Evidence(champion, challenger, pairs, *maes, None, None, None, confidence, basis)
    from scipy.stats import bootstrap

    interval = bootstrap(
        (differences,),
        np.mean,
        confidence_level=confidence,
        n_resamples=resamples,
        method="BCa",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return Evidence(
        champion,
        challenger,
        pairs,
        float(np.mean(champion_errors)),
        float(np.mean(challenger_errors)),
        float(differences.mean()),
        float(interval.low),
        float(interval.high),
        confidence,
        basis,
    )


class Weighing(NamedTuple):
    """Both kinds of evidence for one challenger against one champion."""

    true_prices: Evidence
    estimated_errors: Evidence

    @property
    def decisive(self) -> Evidence:
        """The true prices when they are enough for an interval, else the estimated errors."""
        return self.true_prices if self.true_prices.low is not None else self.estimated_errors


def read_evidence(database_url: str, champion: str, challenger: str) -> Weighing:
    """The evidence for ``challenger`` against ``champion`` from the ``prices`` table."""
    from runtime.postgres.engines import read_rows

    bound = {"champion": champion, "challenger": challenger}
    true, estimated = read_rows(
        database_url, PAIRED_ERRORS_SQL.bindparams(**bound), PAIRED_ESTIMATES_SQL.bindparams(**bound)
    )
    return Weighing(
        *(
            paired_evidence(
                champion,
                challenger,
                np.array([r["champion_error"] for r in rows], dtype=float),
                np.array([r["challenger_error"] for r in rows], dtype=float),
                basis=basis,
            )
            for rows, basis in ((true, TRUE_PRICES), (estimated, ESTIMATED_ERRORS))
        )
    )
