"""The interval calibration, on data whose answer is known by construction."""

import numpy as np
import pytest

from schemas.intervals import PriceInterval
from training.intervals import calibrate


def test_ratios_are_the_10_and_90_percent_quantiles_of_true_over_predicted():
    # Predicted 100 € everywhere; the true prices are 1..1000 % of that, in steps of 0.1 %.
    predicted = np.full(1000, 100.0)
    actual = np.arange(1, 1001) / 10.0
    folds = np.array_split(np.random.default_rng(7).permutation(1000), 5)
    interval = calibrate(actual, predicted, folds)
    # numpy's default (linear) quantile of 0.001..1.000 at 10 % and 90 %.
    assert interval.lower_ratio == pytest.approx(0.1 * (1 + 0.1 * 999) / 100, rel=1e-9)
    assert interval.upper_ratio == pytest.approx(0.1 * (1 + 0.9 * 999) / 100, rel=1e-9)


def test_fold_coverage_uses_ratios_from_the_other_folds_only():
    # Fold 0's cars are all priced 3x too low; the other folds exactly right. Calibrated
    # on the others, the ratio range is [1, 1], so none of fold 0 is inside its interval
    # and all of the others' are (each of them sees fold 0's ratio 3 in only a quarter of
    # its calibration rows, below the 90 % quantile).
    predicted = np.full(100, 50.0)
    actual = np.full(100, 50.0)
    actual[:20] = 150.0
    folds = [np.arange(i * 20, (i + 1) * 20) for i in range(5)]
    interval = calibrate(actual, predicted, folds)
    assert interval.fold_coverage == [0.0, 1.0, 1.0, 1.0, 1.0]
    # Served: calibrated on every fold, 20 % of the ratios are 3, so the 90 % quantile is 3.
    assert (interval.lower_ratio, interval.upper_ratio) == (1.0, 3.0)


def test_an_interval_is_a_range_around_the_price_and_refuses_inverted_ratios():
    interval = PriceInterval(coverage=0.8, lower_ratio=0.8, upper_ratio=1.25, fold_coverage=[0.8] * 5)
    assert interval.around(120.0) == (96.0, 150.0)
    with pytest.raises(ValueError, match="lower_ratio"):
        PriceInterval(coverage=0.8, lower_ratio=1.2, upper_ratio=0.9, fold_coverage=[])


def test_a_prediction_under_one_euro_counts_as_one_euro_and_both_bounds_are_inside():
    # Fold 0 (rows 0-1): true price twice the prediction; the others: three times. A
    # prediction of 0.5 € counts as 1 €, so the others' ratios are all 3.
    predicted = np.array([1.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    actual = np.array([2.0, 2.0, 3.0, 3.0, 3.0, 3.0])
    folds = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])]
    interval = calibrate(actual, predicted, folds)
    # Fold 0: [1 × 3, 1 × 3] does not hold 2. Folds 1 and 2: [1 × 3, 1 × 3] holds 3
    # exactly, on both bounds.
    assert interval.fold_coverage == [0.0, 1.0, 1.0]
    assert (interval.lower_ratio, interval.upper_ratio) == (2.0, 3.0)


def test_another_coverage_is_calibrated_and_measured_at_its_own_quantiles():
    rng = np.random.default_rng(11)
    predicted = rng.uniform(20, 200, 400)
    actual = predicted * rng.lognormal(0, 0.3, 400)
    folds = np.array_split(rng.permutation(400), 4)
    interval = calibrate(actual, predicted, folds, coverage=0.5)
    ratios = actual / predicted
    assert interval.coverage == 0.5
    assert (interval.lower_ratio, interval.upper_ratio) == pytest.approx(tuple(np.quantile(ratios, [0.25, 0.75])))
    expected = []
    for held_out in folds:
        others = np.setdiff1d(np.arange(400), held_out)
        low, high = np.quantile(ratios[others], [0.25, 0.75])
        expected.append(float(((ratios[held_out] >= low) & (ratios[held_out] <= high)).mean()))
    assert interval.fold_coverage == pytest.approx(expected)
