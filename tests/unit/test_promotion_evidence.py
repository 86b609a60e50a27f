"""The paired evidence behind `promote --if-better`, on errors made by construction."""

import numpy as np
import pytest

from answers.promotion_evidence import MIN_PAIRS, paired_evidence


def errors(seed, n, shift):
    """Champion errors, and the challenger's: the same cars, ``shift`` € more, plus noise."""
    rng = np.random.default_rng(seed)
    champion = np.abs(rng.normal(0, 12, n))
    return champion, np.maximum(champion + shift + rng.normal(0, 3, n), 0)


def normal_interval(differences):
    half = 1.96 * differences.std(ddof=1) / np.sqrt(len(differences))
    return differences.mean() - half, differences.mean() + half


def test_a_challenger_a_euro_closer_on_400_true_prices_is_shown_better():
    champion, challenger = errors(1, 400, -1.0)
    evidence = paired_evidence("1", "2", champion, challenger)
    assert evidence.pairs == 400 and evidence.challenger_better
    assert evidence.decision == "the challenger is better"
    assert evidence.mean_difference == pytest.approx(np.mean(challenger - champion))
    assert (evidence.champion_mae, evidence.challenger_mae) == pytest.approx((champion.mean(), challenger.mean()))
    # The bootstrap interval of a mean of 400 differences is close to the normal one.
    low, high = normal_interval(challenger - champion)
    assert evidence.low == pytest.approx(low, abs=0.15 * (high - low)) and evidence.high == pytest.approx(
        high, abs=0.15 * (high - low)
    )
    assert evidence.high < 0


def test_no_difference_is_not_evidence_and_a_worse_challenger_is_named():
    same = paired_evidence("1", "2", *errors(2, 400, 0.0))
    assert same.low < 0 < same.high and not same.challenger_better
    assert same.decision == "no difference shown: the interval holds zero"
    worse = paired_evidence("1", "2", *errors(3, 400, 1.0))
    assert worse.low > 0 and worse.decision == "the champion is better"
    assert "difference +" in worse.summary() and "the champion is better" in worse.summary()


def test_too_few_true_prices_give_no_interval_and_say_how_many_are_needed():
    evidence = paired_evidence("1", "2", *errors(4, MIN_PAIRS - 1, -5.0))
    assert (evidence.low, evidence.high) == (None, None) and not evidence.challenger_better
    assert (
        evidence.summary()
        == f"v2 against v1: not enough evidence: {MIN_PAIRS - 1} paired true prices, {MIN_PAIRS} needed"
    )
    assert paired_evidence("1", "2", np.array([]), np.array([])).champion_mae is None
