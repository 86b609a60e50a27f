"""When drift sets off a retrain, and what a retrain learns from: the rules of
training/retrain_policy.py and the mix of training/retrain.py, on values written here."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from answers.promotion_evidence import MIN_PAIRS
from runtime.settings import RetrainerSettings
from schemas.features import FEATURES
from training.features import TARGET
from training.retrain import NotEnoughLabels, mixed_table
from training.retrain_policy import ERROR, SUSTAINED, Alert, first_due

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SUSTAIN = timedelta(minutes=5)


def alert(signal, minutes_ago, *, state="drifting", still="drifting", alert_id=None, current_alert=None) -> Alert:
    alert_id = alert_id or f"{signal}@{minutes_ago}"
    return Alert(alert_id, signal, state, NOW - timedelta(minutes=minutes_ago), still, current_alert or alert_id)


def due(alerts, last_start=None, in_flight=False):
    return first_due(alerts, now=NOW, sustain=SUSTAIN, last_start=last_start, in_flight=in_flight)


def test_an_alert_of_the_model_error_sets_off_a_retrain_at_once():
    for signal in ("prices/absolute_error", "prices/estimated_error"):
        found = due([alert(signal, 0)])
        assert found is not None and (found.alert.signal, found.reason) == (signal, ERROR)


def test_a_drift_of_the_cars_or_prices_sets_one_off_only_once_sustained():
    assert due([alert("rentals/mileage", 4)]) is None  # drifting for 4 of the 5 minutes
    found = due([alert("rentals/mileage", 5)])
    assert found is not None and found.reason == SUSTAINED
    assert due([alert("prices/price_per_day.requests", 6)]).reason == SUSTAINED


def test_a_drift_that_has_passed_or_was_followed_by_another_alert_sets_off_nothing():
    assert due([alert("rentals/mileage", 10, still="stable")]) is None
    assert due([alert("prices/absolute_error", 1, still="stable")]) is None
    # The signal's current alert is a later one: this alert's episode is over.
    assert due([alert("rentals/mileage", 10, current_alert="rentals/mileage@later")]) is None


def test_the_checkout_delays_never_set_off_a_price_model_retrain():
    assert due([alert("rentals/delay.connect", 60), alert("delays/is_conflict", 60)]) is None


def test_an_alert_that_a_signal_is_stable_again_sets_off_nothing():
    assert due([alert("prices/absolute_error", 1, state="stable", still="stable")]) is None


def test_no_alert_starts_two_retrains_and_none_starts_while_one_is_in_flight():
    error = alert("prices/absolute_error", 10)
    assert due([error], in_flight=True) is None
    assert due([error], last_start=error.detected_at) is None  # answered by the retrain it started
    assert due([error], last_start=NOW - timedelta(minutes=30)) is not None  # came after the last one


def test_the_earliest_due_alert_goes_first():
    later, earlier = alert("prices/absolute_error", 1), alert("rentals/mileage", 20)
    assert due([later, earlier]).alert == earlier


def cars(n: int, price: float, start: int = 0) -> pd.DataFrame:
    rows = [
        {
            **dict.fromkeys(FEATURES, False),
            "model_key": "Renault",
            "mileage": 10_000 + i,
            "engine_power": 100,
            "fuel": "diesel",
            "paint_color": "black",
            "car_type": "sedan",
            TARGET: price,
        }
        for i in range(start, start + n)
    ]
    return pd.DataFrame(rows, columns=[*FEATURES, TARGET])


def test_the_recent_rows_carry_their_share_of_the_weight_each_counted_once():
    reference, recent = cars(1_000, 100.0), cars(300, 130.0)
    recent = pd.concat([recent, recent.iloc[:50]], ignore_index=True)  # 50 asked about twice
    data = mixed_table(reference, recent, RetrainerSettings(recent_share=0.7, min_recent=300))
    assert (data.reference_rows, data.recent_rows) == (1_000, 300)
    assert len(data.table) == len(data.weights) == 1_300
    assert data.weights[1_000:].sum() / data.weights.sum() == pytest.approx(0.7)
    assert np.mean(data.weights) == pytest.approx(1.0)
    assert (data.table[TARGET].iloc[1_000:] == 130.0).all() and (data.table[TARGET].iloc[:1_000] == 100.0).all()


def test_too_few_distinct_labelled_requests_are_refused_with_the_counts():
    recent = pd.concat([cars(150, 130.0)] * 2, ignore_index=True)  # 300 requests, 150 cars
    with pytest.raises(NotEnoughLabels, match="150 distinct .* needs 200"):
        mixed_table(cars(1_000, 100.0), recent, RetrainerSettings(min_recent=200))


def test_a_registered_challenger_is_left_to_be_weighed_for_the_cooldown_and_a_later_alert_then_retrains():
    cooldown = timedelta(hours=1)
    finished = NOW - timedelta(minutes=50)
    later = alert("rentals/mileage", 20)  # raised after the last retrain started, sustained
    rules = {"last_start": finished - timedelta(minutes=1), "in_flight": False, "cooldown": cooldown}
    assert first_due([later], now=NOW, sustain=SUSTAIN, last_registered=finished, **rules) is None
    after = first_due([later], now=NOW + timedelta(minutes=10), sustain=SUSTAIN, last_registered=finished, **rules)
    assert after is not None and after.alert == later  # not lost: due once the cooldown ends
    # A retrain that registered nothing (skipped, failed) leaves no cooldown.
    assert first_due([later], now=NOW, sustain=SUSTAIN, last_registered=None, **rules) is not None
    # A challenger already weighed on live traffic ends its cooldown early.
    weighed = first_due([later], now=NOW, sustain=SUSTAIN, last_registered=finished, weighed=True, **rules)
    assert weighed is not None and weighed.alert == later
    assert (
        first_due(
            [later],
            now=NOW,
            sustain=SUSTAIN,
            last_registered=finished,
            weighed=True,
            in_flight=True,
            **{k: v for k, v in rules.items() if k != "in_flight"},
        )
        is None
    )  # never beside one in flight


def test_a_challenger_is_weighed_once_promote_if_better_can_decide_on_its_true_prices():
    assert RetrainerSettings().weighed_prices == MIN_PAIRS
