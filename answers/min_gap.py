"""The minimum-gap simulator: what enforcing at least T minutes between the planned end of
a car's rental and the planned start of the next one would have done to the history.

A rental is **blocked** at threshold T when it is in scope (every check-in, or Connect
check-ins only) and it was planned less than T minutes after the previous rental of its
car (``planned_gap_minutes < T``). Blocking it

- costs the booking, whatever its state (a canceled rental was booked too), and, when
  it ended, one day of its rental revenue: the model's price per day for its car (a
  canceled rental earned nothing);
- solves its late-return conflict, if the previous driver's late return made its
  driver wait (``previous delay > planned gap``).

Rentals without a previous rental planned within 12 h (no planned gap) are never blocked.
The input is the history grouped by check-in type and planned gap (``GapGroup``), which
Postgres aggregates in one query however long the history grows.

>>> groups = [
...     GapGroup("mobile", 0, rentals=3, conflicts=2, ended_revenue_per_day=100.0),
...     GapGroup("connect", 30, rentals=2, conflicts=1, ended_revenue_per_day=80.0),
...     GapGroup("connect", 90, rentals=1, conflicts=0, ended_revenue_per_day=50.0),
...     GapGroup("connect", None, rentals=4, conflicts=0, ended_revenue_per_day=200.0),
... ]
>>> outcome(groups, threshold_minutes=60, scope="all")
MinGapOutcome(threshold_minutes=60, scope='all', rentals=10, scope_rentals=10, blocked_rentals=5, blocked_revenue_per_day=180.0, conflicts=3, conflicts_solved=3)
>>> o = outcome(groups, threshold_minutes=60, scope="connect")
>>> o.blocked_rentals, o.blocked_share, o.conflicts_solved, o.solved_share
(2, 0.2, 1, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Scope = Literal["all", "connect"]
SCOPES: tuple[Scope, ...] = ("all", "connect")
SCOPE_LABELS: dict[Scope, str] = {"all": "All cars", "connect": "Connect cars only"}
MAX_THRESHOLD_MINUTES = 720  # the history links rentals planned less than 12 h apart


@dataclass(frozen=True)
class GapGroup:
    """The rentals of one check-in type planned ``planned_gap_minutes`` after the previous
    rental of their car (None: no previous rental within 12 h)."""

    checkin_type: str
    planned_gap_minutes: int | None
    rentals: int
    conflicts: int
    ended_revenue_per_day: float  # sum of the model's price per day over the ended ones


@dataclass(frozen=True)
class MinGapOutcome:
    threshold_minutes: int
    scope: Scope
    rentals: int  # every rental of the history, any scope
    scope_rentals: int
    blocked_rentals: int
    blocked_revenue_per_day: float  # euros
    conflicts: int  # late-return conflicts in scope
    conflicts_solved: int

    @property
    def blocked_share(self) -> float:
        """Blocked rentals as a share of all rentals."""
        return self.blocked_rentals / self.rentals if self.rentals else 0.0

    @property
    def solved_share(self) -> float:
        """Conflicts solved as a share of the conflicts in scope."""
        return self.conflicts_solved / self.conflicts if self.conflicts else 0.0


def outcome(groups: Iterable[GapGroup], threshold_minutes: int, scope: Scope) -> MinGapOutcome:
    """The simulator's figures for one threshold and scope (``curve`` at that one point)."""
    groups = list(groups)
    in_scope = [g for g in groups if _in_scope(g, scope)]
    point = curve(groups, scope, np.array([threshold_minutes]))
    return MinGapOutcome(
        threshold_minutes=threshold_minutes,
        scope=scope,
        rentals=sum(g.rentals for g in groups),
        scope_rentals=sum(g.rentals for g in in_scope),
        blocked_rentals=int(point.blocked_rentals[0]),
        blocked_revenue_per_day=float(point.blocked_revenue_per_day[0]),
        conflicts=sum(g.conflicts for g in in_scope),
        conflicts_solved=int(point.conflicts_solved[0]),
    )


@dataclass(frozen=True)
class Curve:
    """The simulator's figures at every threshold of ``thresholds`` for one scope."""

    scope: Scope
    thresholds: np.ndarray
    blocked_rentals: np.ndarray
    blocked_share: np.ndarray
    blocked_revenue_per_day: np.ndarray
    conflicts_solved: np.ndarray
    solved_share: np.ndarray


def curve(groups: Sequence[GapGroup], scope: Scope, thresholds: np.ndarray | None = None) -> Curve:
    """The simulator's figures at every threshold at once (every minute from 0 to 720 by
    default): cumulative sums over the groups sorted by planned gap."""
    if thresholds is None:
        thresholds = np.arange(MAX_THRESHOLD_MINUTES + 1)
    rentals = sum(g.rentals for g in groups)
    in_scope = [g for g in groups if _in_scope(g, scope)]
    gapped = sorted((g for g in in_scope if g.planned_gap_minutes is not None), key=lambda g: g.planned_gap_minutes)
    gaps = np.array([g.planned_gap_minutes for g in gapped], dtype=np.int64)
    below = np.searchsorted(gaps, thresholds, side="left")  # groups with a gap < T

    def cumulative(values: list[float]) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(values)])[below]

    blocked = cumulative([g.rentals for g in gapped])
    solved = cumulative([g.conflicts for g in gapped])
    conflicts = sum(g.conflicts for g in in_scope)
    return Curve(
        scope=scope,
        thresholds=np.asarray(thresholds),
        blocked_rentals=blocked,
        blocked_share=blocked / rentals if rentals else np.zeros_like(blocked),
        blocked_revenue_per_day=cumulative([g.ended_revenue_per_day for g in gapped]),
        conflicts_solved=solved,
        solved_share=solved / conflicts if conflicts else np.zeros_like(solved),
    )


def _in_scope(group: GapGroup, scope: Scope) -> bool:
    return scope == "all" or group.checkin_type == "connect"
