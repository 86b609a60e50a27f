"""A reference histogram logged with a model version: one share per bin, edges in order,
or the version's reference is refused when it is read (the drift report draws it)."""

import pytest
from pydantic import ValidationError

from schemas.reference import Histogram


def test_a_histogram_has_one_share_per_bin():
    assert Histogram(edges=[0.0, 1.0, 2.0], shares=[0.25, 0.75]).shares == [0.25, 0.75]
    with pytest.raises(ValidationError, match="3 edges make 2 bins, but 3 shares"):
        Histogram(edges=[0.0, 1.0, 2.0], shares=[0.2, 0.3, 0.5])
    with pytest.raises(ValidationError, match="3 edges make 2 bins, but 1 shares"):
        Histogram(edges=[0.0, 1.0, 2.0], shares=[1.0])


def test_its_edges_do_not_decrease():
    with pytest.raises(ValidationError, match="must not decrease"):
        Histogram(edges=[0.0, 2.0, 1.0], shares=[0.5, 0.5])
