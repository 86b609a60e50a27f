"""Champion against challenger on live traffic, from the ``prices`` table: how far apart
their prices are and, where the true price is known (price requests that carried a
``listed_price_per_day``, e.g. the simulator's listings), which one is closer. Read by
``rentalstream compare`` and the dashboard.
"""

from __future__ import annotations

from sqlalchemy import text

COMPARISON_SQL = text("""
    WITH challenged AS (
        SELECT model_version, challenger_model_version, price_per_day, challenger_price_per_day,
               listed_price_per_day,
               challenger_price_per_day - price_per_day               AS difference,
               abs(price_per_day - listed_price_per_day)              AS champion_error,
               abs(challenger_price_per_day - listed_price_per_day)   AS challenger_error,
               scored_at
        FROM prices WHERE challenger_model_version IS NOT NULL
    )
    SELECT model_version                                               AS champion_version,
           challenger_model_version                                    AS challenger_version,
           count(*)                                                    AS prices,
           count(challenger_price_per_day)                             AS challenger_priced,
           avg(difference)                                             AS mean_difference,
           avg(abs(difference))                                        AS mean_abs_difference,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY abs(difference)) AS p90_abs_difference,
           count(challenger_error)                                     AS with_true_price,
           avg(champion_error) FILTER (WHERE challenger_error IS NOT NULL) AS champion_mae,
           avg(challenger_error)                                       AS challenger_mae,
           count(*) FILTER (WHERE challenger_error < champion_error)   AS challenger_closer,
           count(*) FILTER (WHERE challenger_error > champion_error)   AS champion_closer,
           max(scored_at)                                              AS last_scored_at
    FROM challenged
    GROUP BY 1, 2 ORDER BY max(scored_at) DESC
""")

# How often the true price fell inside the served interval, per version.
INTERVAL_COVERAGE_SQL = text("""
    SELECT model_version,
           count(*) AS with_true_price,
           avg(CASE WHEN listed_price_per_day BETWEEN price_lower AND price_upper THEN 1.0 ELSE 0.0 END) AS coverage,
           avg(price_upper - price_lower) AS mean_width
    FROM prices
    WHERE listed_price_per_day IS NOT NULL AND price_lower IS NOT NULL
    GROUP BY 1 ORDER BY max(scored_at) DESC
""")


def verdict(row: dict) -> str:
    """Which model is closer to the true prices, in words."""
    if not row["with_true_price"]:
        return "no true prices yet"
    gap = row["challenger_mae"] - row["champion_mae"]
    closer = "challenger" if gap < 0 else "champion" if gap > 0 else "neither"
    return f"{closer} closer (MAE {abs(gap):.2f} € lower)" if closer != "neither" else "equally close"


def read_comparison(database_url: str) -> tuple[list[dict], list[dict]]:
    """(champion/challenger rows, interval coverage rows), newest pairing first."""
    from runtime.postgres.engines import read_rows

    pairs, coverage = read_rows(database_url, COMPARISON_SQL, INTERVAL_COVERAGE_SQL)
    return pairs, coverage


def comparison_table(rows: list[dict]):
    from rich import box
    from rich.table import Table

    table = Table(title="champion vs challenger on live traffic", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in (
        "champion",
        "challenger",
        "prices",
        "mean diff €",
        "mean |diff| €",
        "p90 |diff| €",
        "true prices",
        "champion MAE €",
        "challenger MAE €",
        "closer: champ / chall",
        "verdict",
    ):
        table.add_column(column, justify="left" if column in ("champion", "challenger", "verdict") else "right")
    for r in rows:
        table.add_row(
            f"v{r['champion_version']}",
            f"v{r['challenger_version']}",
            f"{r['prices']:,}",
            _euros(r["mean_difference"], signed=True),
            _euros(r["mean_abs_difference"]),
            _euros(r["p90_abs_difference"]),
            f"{r['with_true_price']:,}",
            _euros(r["champion_mae"]),
            _euros(r["challenger_mae"]),
            f"{r['champion_closer']:,} / {r['challenger_closer']:,}",
            verdict(r),
        )
    return table


def coverage_table(rows: list[dict]):
    from rich import box
    from rich.table import Table

    table = Table(title="price interval on true prices", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("version", "true prices", "inside the interval", "mean width €"):
        table.add_column(column, justify="left" if column == "version" else "right")
    for r in rows:
        table.add_row(
            f"v{r['model_version']}", f"{r['with_true_price']:,}", f"{r['coverage']:.1%}", _euros(r["mean_width"])
        )
    return table


def _euros(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.2f}" if signed else f"{value:.2f}"
