"""The per-signal state machine on synthetic streams whose levels are known by construction."""

import random
from datetime import UTC, datetime

import pytest

from monitor.detectors import DetectorSpec, ErrorMonitor, SignalMonitor
from monitor.watch import ESTIMATED_MAE_SIGNAL, DriftWatch, Origin
from schemas.cars import CATEGORICAL, EQUIPMENT
from schemas.events import PriceScored
from schemas.reference import Distribution, ReferenceStats

REFERENCE = Distribution(n=10_000, mean=100.0, std=10.0, low=50.0, high=150.0)
ADWIN = DetectorSpec("adwin", 0.002)


def feed(monitor, values):
    return [(i, t) for i, t in enumerate(monitor.observe(v) for v in values) if t is not None]


def test_a_stationary_stream_raises_nothing():
    rng = random.Random(7)
    monitor = SignalMonitor("s", ADWIN, REFERENCE)
    assert feed(monitor, [rng.gauss(100, 10) for _ in range(30_000)]) == []
    assert monitor.state == "stable" and monitor.events_seen == 30_000


def test_a_lasting_shift_alerts_once_then_recovers_once():
    rng = random.Random(8)
    monitor = SignalMonitor("rentals/mileage", ADWIN, REFERENCE)
    values = [rng.gauss(100, 10) for _ in range(5000)] + [rng.gauss(120, 10) for _ in range(8000)]
    values += [rng.gauss(100, 10) for _ in range(8000)]
    fired = feed(monitor, values)
    assert [t.state for _, t in fired] == ["drifting", "recovered"]
    (drift_at, drift), (recover_at, recovered) = fired
    assert 5000 <= drift_at < 5200 and 13_000 <= recover_at < 13_200
    # The alert's windows are the two levels, in the signal's own units (the "after" side
    # holds the few dozen values seen between the change and its detection).
    assert drift.before.mean == pytest.approx(100, abs=1) and drift.after.mean == pytest.approx(120, abs=5)
    assert recovered.before.mean == pytest.approx(120, abs=1) and recovered.after.mean == pytest.approx(100, abs=5)
    assert drift.reference.mean == 100.0 and drift.detector == "ADWIN(delta=0.002)"
    assert drift.events_seen == drift_at + 1


def test_a_change_back_towards_the_reference_is_not_drift():
    """A stream that starts away from the reference and comes back is returning to normal."""
    rng = random.Random(9)
    monitor = SignalMonitor("s", ADWIN, REFERENCE)
    values = [rng.gauss(130, 10) for _ in range(5000)] + [rng.gauss(100, 10) for _ in range(5000)]
    assert feed(monitor, values) == []
    assert monitor.detections >= 1 and monitor.state == "stable"


def test_values_are_clipped_to_the_reference_range():
    """One absurd value must not pass for a change of the whole stream."""
    rng = random.Random(10)
    monitor = SignalMonitor("s", ADWIN, REFERENCE)
    values = [rng.gauss(100, 10) for _ in range(3000)]
    values[1500] = 1e9
    assert feed(monitor, values) == []


def test_category_share_indicator_detects_a_new_mix():
    rng = random.Random(11)
    monitor = SignalMonitor("rentals/fuel=electro", ADWIN, share=0.01)
    values = [float(rng.random() < 0.01) for _ in range(5000)] + [float(rng.random() < 0.2) for _ in range(3000)]
    fired = feed(monitor, values)
    assert [t.state for _, t in fired] == ["drifting"]
    assert fired[0][1].after.mean == pytest.approx(0.2, abs=0.05)
    assert fired[0][1].reference.mean == 0.01


def test_rolling_mae_alerts_past_the_margin_and_recovers_below_half_of_it():
    monitor = ErrorMonitor("prices/absolute_error", cv_mae=10.0, window=100, margin=0.25)
    # errors of 11 (under 12.5), then 14 (over), then 11 again (under 11.25)
    pairs = [(100.0, 89.0)] * 300 + [(100.0, 114.0)] * 300 + [(100.0, 111.0)] * 300
    fired = [(i, t) for i, t in enumerate(monitor.observe(p, a) for p, a in pairs) if t is not None]
    assert [t.state for _, t in fired] == ["drifting", "recovered"]
    # 11*(100-k) + 14k > 12.5*100  <=>  k > 50: the 51st error of 14 sets it off
    assert fired[0][0] == 300 + 50
    # 14*(100-k) + 11k < 11.25*100  <=>  k > 91.67: the 92nd error of 11 brings it back
    assert fired[1][0] == 600 + 91
    assert fired[0][1].after.mean == pytest.approx((11 * 49 + 14 * 51) / 100)


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="unknown detector"):
        DetectorSpec("cusum", 1.0)
    assert DetectorSpec("page_hinkley", 200).label == "PageHinkley(threshold=200)"


def flapping(seed):
    """Level 100, then 120, 100, 120 for 600 values each, then 100 for good."""
    rng = random.Random(seed)
    levels = [(100, 5000), (120, 600), (100, 600), (120, 600), (100, 8000)]
    return [rng.gauss(level, 10) for level, n in levels for _ in range(n)]


def test_without_a_cooldown_a_flapping_signal_raises_an_alert_per_flap():
    fired = feed(SignalMonitor("s", ADWIN, REFERENCE), flapping(12))
    assert [t.state for _, t in fired] == ["drifting", "recovered", "drifting", "recovered"]


def test_within_the_cooldown_flaps_make_no_alert_and_the_last_change_is_raised_when_it_ends():
    monitor = SignalMonitor("s", ADWIN, REFERENCE, cooldown=3000)
    fired = feed(monitor, flapping(12))
    assert [t.state for _, t in fired] == ["drifting", "recovered"]
    (drift_at, _), (recover_at, recovered) = fired
    assert 5000 <= drift_at < 5200
    # Judged when the cooldown ends, over every value since the drift's alert: back at 100.
    assert recover_at == drift_at + 3000
    assert recovered.after.mean == pytest.approx(100, abs=2)
    assert monitor.state == "stable" and monitor.detections >= 4


def test_a_cooldown_shorter_than_a_lasting_shift_changes_nothing():
    rng = random.Random(8)
    values = [rng.gauss(100, 10) for _ in range(5000)] + [rng.gauss(120, 10) for _ in range(8000)]
    values += [rng.gauss(100, 10) for _ in range(8000)]
    without = feed(SignalMonitor("s", ADWIN, REFERENCE), values)
    with_cooldown = feed(SignalMonitor("s", ADWIN, REFERENCE, cooldown=2000), values)
    assert [(i, t.state) for i, t in with_cooldown] == [(i, t.state) for i, t in without]


def test_the_rolling_mae_holds_its_state_through_the_cooldown_then_follows_the_errors_again():
    monitor = ErrorMonitor("prices/absolute_error", cv_mae=10.0, window=100, margin=0.25, cooldown=400)
    pairs = [(100.0, 89.0)] * 300 + [(100.0, 114.0)] * 100 + [(100.0, 111.0)] * 600
    fired = [(i, t) for i, t in enumerate(monitor.observe(p, a) for p, a in pairs) if t is not None]
    # Drifting on the 51st error of 14 (as above); without the cooldown it would recover at
    # 400 + 91, once the window is back under 11.25: held until 400 prices after the alert.
    assert [(i, t.state) for i, t in fired] == [(350, "drifting"), (750, "recovered")]


def test_the_estimated_error_is_watched_on_every_price_and_kept_apart_where_a_real_price_came_back():
    shares = {name: {c: 1 / len(categories) for c in categories} for name, categories in CATEGORICAL.items()}
    reference = ReferenceStats(
        rows=100,
        numeric={"mileage": REFERENCE, "engine_power": REFERENCE},
        category_shares={**shares, **{name: {"true": 0.5} for name in EQUIPMENT}},
        predicted_price=REFERENCE,
        listed_price=REFERENCE,
        cv_mae=10.0,
        cv_rmse=15.0,
        delays={},
        conflict_share=0.1,
    )
    watch = DriftWatch(reference, ADWIN, mae_window=100)
    now = datetime(2026, 12, 2, tzinfo=UTC)

    def price(i, estimated, listed=None):
        return PriceScored(
            price_id=f"p-{i}",
            rental_id=i + 1 if listed is None else None,
            request_id=None if listed is None else f"p-{i}",
            price_per_day=100.0,
            listed_price_per_day=listed,
            estimated_error=estimated,
            model_name="m",
            model_version="1",
            event_time=now,
            scored_at=now,
        )

    origin = Origin("prices", 0, 0, "-", now)
    fired = []
    estimates = [9.0 if i < 100 else 14.0 for i in range(300)]  # rentals at 9 €, then at 14 € (> 10 € × 1.25)
    for i, estimated in enumerate(estimates):
        fired += watch.observe_price(price(i, estimated), origin)
    # The alert comes with the first full window of 100 whose mean passes 12.5 €.
    first = next(n for n in range(100, 301) if sum(estimates[n - 100 : n]) / 100 > 12.5)
    for i in range(300, 320):  # requests with a real price, estimated at 20 €
        fired += watch.observe_price(price(i, 20.0, listed=110.0), origin)
    assert [(f.transition.signal, f.transition.state, f.transition.events_seen) for f in fired] == [
        (ESTIMATED_MAE_SIGNAL, "drifting", first)
    ]
    assert watch.estimated_where_true.get() == 20.0 and watch.error.window == (20, 10.0)
    assert watch.estimated_error.window == (100, pytest.approx((80 * 14.0 + 20 * 20.0) / 100))
