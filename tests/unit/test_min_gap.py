"""The minimum-gap simulator's arithmetic: hand-computed cases, then the whole delay
history against a row-by-row pandas computation."""

import numpy as np
import pandas as pd
import pytest

from answers.min_gap import GapGroup, curve, outcome

# Six rentals, worked by hand:
#   id  check-in  state     gap  conflict  price
#   1   mobile    ended       0  yes        50
#   2   mobile    canceled   30  yes        70  (canceled: no revenue)
#   3   connect   ended      30  no         80
#   4   connect   ended      60  yes        90
#   5   connect   ended     720  no        100
#   6   mobile    ended    None  no        200  (no previous rental within 12 h)
GROUPS = [
    GapGroup("mobile", 0, rentals=1, conflicts=1, ended_revenue_per_day=50.0),
    GapGroup("mobile", 30, rentals=1, conflicts=1, ended_revenue_per_day=0.0),
    GapGroup("connect", 30, rentals=1, conflicts=0, ended_revenue_per_day=80.0),
    GapGroup("connect", 60, rentals=1, conflicts=1, ended_revenue_per_day=90.0),
    GapGroup("connect", 720, rentals=1, conflicts=0, ended_revenue_per_day=100.0),
    GapGroup("mobile", None, rentals=1, conflicts=0, ended_revenue_per_day=200.0),
]


@pytest.mark.parametrize(
    ("threshold", "scope", "blocked", "revenue", "solved", "conflicts"),
    [
        (0, "all", 0, 0.0, 0, 3),  # nothing is planned less than 0 minutes after
        (30, "all", 1, 50.0, 1, 3),  # only gap 0: a gap of exactly T is allowed
        (31, "all", 3, 130.0, 2, 3),  # gaps 0, 30, 30; the canceled one earns nothing
        (60, "connect", 1, 80.0, 0, 1),
        (61, "connect", 2, 170.0, 1, 1),
        (720, "all", 4, 220.0, 3, 3),
        (721, "all", 5, 320.0, 3, 3),  # rental 6 has no previous rental: never blocked
    ],
)
def test_hand_computed_cases(threshold, scope, blocked, revenue, solved, conflicts):
    result = outcome(GROUPS, threshold, scope)
    assert (result.blocked_rentals, result.blocked_revenue_per_day, result.conflicts_solved, result.conflicts) == (
        blocked,
        revenue,
        solved,
        conflicts,
    )
    assert result.rentals == 6
    assert result.blocked_share == pytest.approx(blocked / 6)


def test_an_outcome_says_what_it_was_asked_and_counts_its_scope():
    result = outcome(GROUPS, 45, "connect")
    assert (result.threshold_minutes, result.scope, result.rentals, result.scope_rentals) == (45, "connect", 6, 3)
    assert curve(GROUPS, "connect").scope == "connect"


def test_an_empty_history_blocks_nothing():
    result = outcome([], 120, "connect")
    assert (result.blocked_rentals, result.blocked_share, result.solved_share) == (0, 0.0, 0.0)
    empty = curve([], "all", np.array([0, 60, 720]))
    for figures in (empty.blocked_rentals, empty.blocked_share, empty.conflicts_solved, empty.solved_share):
        assert figures.tolist() == [0.0, 0.0, 0.0]


def test_a_scope_without_conflicts_solves_none_of_them_at_every_threshold():
    quiet = [GapGroup("connect", 30, rentals=2, conflicts=0, ended_revenue_per_day=10.0)]
    figures = curve(quiet, "connect", np.array([0, 31, 720]))
    assert figures.solved_share.tolist() == [0.0, 0.0, 0.0]
    assert figures.blocked_share.tolist() == [0.0, 1.0, 1.0]


@pytest.fixture(scope="module")
def history(delays_xlsx) -> pd.DataFrame:
    """The delay history with each rental's conflict, worked out row by row with pandas,
    and a price per day for each rental (any prices will do for the arithmetic)."""
    rows = pd.read_excel(delays_xlsx, sheet_name="rentals_data")
    previous = rows[["rental_id", "delay_at_checkout_in_minutes"]].rename(
        columns={"rental_id": "previous_ended_rental_id", "delay_at_checkout_in_minutes": "previous_delay"}
    )
    rows = rows.merge(previous, on="previous_ended_rental_id", how="left")
    rows["conflict"] = rows["previous_delay"] - rows["time_delta_with_previous_rental_in_minutes"] > 0
    rows["price"] = np.random.default_rng(7).uniform(20, 400, len(rows)).round(2)
    return rows


def groups_of(history: pd.DataFrame) -> list[GapGroup]:
    """What Postgres's GROUP BY hands the simulator, built here with pandas."""
    frame = history.assign(
        gap=history["time_delta_with_previous_rental_in_minutes"].astype("Int64"),
        ended_price=history["price"].where(history["state"] == "ended", 0.0),
    )
    grouped = frame.groupby(["checkin_type", "gap"], dropna=False).agg(
        rentals=("rental_id", "size"), conflicts=("conflict", "sum"), revenue=("ended_price", "sum")
    )
    return [
        GapGroup(kind, None if pd.isna(gap) else int(gap), int(g.rentals), int(g.conflicts), float(g.revenue))
        for (kind, gap), g in grouped.iterrows()
    ]


@pytest.mark.parametrize("scope", ["all", "connect"])
@pytest.mark.parametrize("threshold", [0, 15, 30, 60, 90, 120, 180, 360, 719, 720])
def test_the_whole_history_against_pandas(history, scope, threshold):
    in_scope = history if scope == "all" else history[history["checkin_type"] == "connect"]
    blocked = in_scope[in_scope["time_delta_with_previous_rental_in_minutes"] < threshold]
    result = outcome(groups_of(history), threshold, scope)
    assert result.rentals == len(history) == 21_310
    assert result.blocked_rentals == len(blocked)
    assert result.blocked_share == pytest.approx(len(blocked) / len(history))
    assert result.blocked_revenue_per_day == pytest.approx(blocked.loc[blocked["state"] == "ended", "price"].sum())
    assert result.conflicts == in_scope["conflict"].sum()
    assert result.conflicts_solved == blocked["conflict"].sum()


def test_the_known_figures_of_the_history(history):
    """Counted once by hand from the spreadsheet with pandas (see the closing note of issue 5)."""
    groups = groups_of(history)
    figures = {
        (t, s): (outcome(groups, t, s).blocked_rentals, outcome(groups, t, s).conflicts_solved)
        for t in (60, 120)
        for s in ("all", "connect")
    }
    assert figures == {
        (60, "all"): (401, 146),
        (60, "connect"): (181, 48),
        (120, "all"): (666, 180),
        (120, "connect"): (295, 59),
    }


@pytest.mark.parametrize("scope", ["all", "connect"])
def test_the_curves_against_pandas_at_every_ten_minutes(history, scope):
    lines = curve(groups_of(history), scope)
    assert list(lines.thresholds) == list(range(721))
    in_scope = history if scope == "all" else history[history["checkin_type"] == "connect"]
    gap = in_scope["time_delta_with_previous_rental_in_minutes"]
    for threshold in range(0, 721, 10):
        blocked = in_scope[gap < threshold]
        assert lines.blocked_rentals[threshold] == len(blocked)
        assert lines.blocked_share[threshold] == pytest.approx(len(blocked) / len(history))
        assert lines.blocked_revenue_per_day[threshold] == pytest.approx(
            blocked.loc[blocked["state"] == "ended", "price"].sum()
        )
        assert lines.conflicts_solved[threshold] == blocked["conflict"].sum()
        assert lines.solved_share[threshold] == pytest.approx(blocked["conflict"].sum() / in_scope["conflict"].sum())
