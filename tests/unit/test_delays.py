import pytest

from scorer.delays import is_late, knock_on


@pytest.mark.parametrize(
    "previous_delay, gap, expected",
    [
        (90, 60, (30, True)),  # 90 min late, 60 min planned slack: next driver waits 30
        (60, 60, (0, False)),  # just in time is no conflict
        (61, 60, (1, True)),  # one minute of waiting is a conflict
        (-15, 0, (-15, False)),  # early return, back-to-back rental
        (500, 720, (-220, False)),
        (None, 60, (None, None)),  # previous delay unknown
    ],
)
def test_knock_on(previous_delay, gap, expected):
    assert knock_on(previous_delay, gap) == expected


def test_late_means_strictly_after_the_planned_end():
    assert [is_late(d) for d in (-1, 0, 1, None)] == [False, False, True, None]
