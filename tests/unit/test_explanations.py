"""Contributions rounded to cents together: they sum to the price, each within a cent."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.explanations import CentsDoNotAddUp, in_cents

euros = st.floats(min_value=-500, max_value=500, allow_nan=False)


@given(base=st.floats(min_value=0, max_value=300), contributions=st.lists(euros, min_size=1, max_size=20))
def test_rounded_contributions_sum_to_the_price_and_each_moves_by_at_most_a_cent(base, contributions):
    price = round(base + math.fsum(contributions), 2)
    rounded_base, rounded = in_cents(base, contributions, price)
    assert round(rounded_base * 100) + sum(round(c * 100) for c in rounded) == round(price * 100)
    assert all(abs(r - e) <= 0.01 + 1e-9 for r, e in zip([rounded_base, *rounded], [base, *contributions], strict=True))
    assert all(round(r * 100) == pytest.approx(r * 100, abs=1e-6) for r in [rounded_base, *rounded])  # whole cents


def test_one_by_one_rounding_would_miss_the_price():
    contributions = [3.336, 3.336, 3.336]
    assert sum(round(c, 2) for c in contributions) == pytest.approx(10.02)
    assert in_cents(0.0, contributions, 10.01) == (0.0, [3.34, 3.34, 3.33])


def test_a_price_the_contributions_do_not_make_is_refused():
    with pytest.raises(CentsDoNotAddUp, match="sum to 110.0000 €, not the price 110.05 €"):
        in_cents(100.0, [10.0], 110.05)
