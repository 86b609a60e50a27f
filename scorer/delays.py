"""Delay arithmetic: how late a car came back and whether that made the next driver wait.

>>> is_late(30), is_late(-5), is_late(0), is_late(None)
(True, False, False, None)
>>> knock_on(previous_delay_minutes=90, planned_gap_minutes=60)
(30, True)
>>> knock_on(previous_delay_minutes=-10, planned_gap_minutes=0)
(-10, False)
>>> knock_on(previous_delay_minutes=None, planned_gap_minutes=60)
(None, None)
"""

from __future__ import annotations


def is_late(delay_at_checkout_minutes: int | None) -> bool | None:
    """Late means returned after the planned end; unknown when the delay is unknown."""
    if delay_at_checkout_minutes is None:
        return None
    return delay_at_checkout_minutes > 0


def knock_on(previous_delay_minutes: int | None, planned_gap_minutes: int | None) -> tuple[int | None, bool | None]:
    """(waiting minutes, conflict) for a rental following a previous one.

    The previous car came back ``previous_delay`` minutes late and the next rental was
    planned ``planned_gap`` minutes after its planned end, so the next driver waits
    ``previous_delay - planned_gap`` minutes; a positive wait is a conflict.
    """
    if previous_delay_minutes is None or planned_gap_minutes is None:
        return None, None
    waiting = previous_delay_minutes - planned_gap_minutes
    return waiting, waiting > 0
