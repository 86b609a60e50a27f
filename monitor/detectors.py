"""One monitor per signal: a River drift detector, the values around its last change, and
the state (stable / drifting) that keeps one drift from raising an alert per event.

A detection becomes an alert only when it changes the state:

- **stable → drifting**: the detector found a change, and the change moved the signal
  *away* from its reference (the model's training data). A change back towards the
  reference is the stream returning to normal, not drift.
- **drifting → recovered**: a later change brought the signal closer to where it was
  before the drift than to where the drift had taken it.

Any other detection is counted (``detections``) and otherwise ignored.

**Cooldown.** After an alert, a signal raises nothing for its next ``cooldown`` values. A
detection in that time is not dropped: it is judged when the cooldown ends, by the same
rules, over every value since the last judged change, so a recovery (or a new drift)
inside the cooldown is raised late, never lost, and several detections of one change
(ADWIN may fire twice on one shift, online-ml/river#574) make one judgement.

>>> import random
>>> rng = random.Random(1)
>>> watch = SignalMonitor("rentals/mileage", DetectorSpec("adwin", 0.002), Distribution(
...     n=1000, mean=0.0, std=1.0, low=-4.0, high=4.0))
>>> states = [watch.observe(rng.gauss(0 if i < 3000 else 2, 1)) for i in range(6000)]
>>> [(i, s.state) for i, s in enumerate(states) if s]
[(3039, 'drifting')]
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from river import drift, stats, utils
from river.base import DriftDetector

from schemas.events import WindowStats
from schemas.reference import Distribution

DETECTORS = ("adwin", "page_hinkley", "kswin")
KEPT_VALUES = 4000  # values remembered for the before/after statistics of an alert


@dataclass(frozen=True)
class DetectorSpec:
    """Which River detector, and its one calibrated setting: ADWIN's ``delta``,
    Page-Hinkley's ``threshold`` (lambda), KSWIN's ``alpha``."""

    name: str
    setting: float

    def __post_init__(self) -> None:
        if self.name not in DETECTORS:
            raise ValueError(f"unknown detector {self.name!r}; expected one of: {', '.join(DETECTORS)}")

    def new(self) -> DriftDetector:
        if self.name == "adwin":
            return drift.ADWIN(delta=self.setting)
        if self.name == "page_hinkley":
            return drift.PageHinkley(threshold=self.setting)
        return drift.KSWIN(alpha=self.setting, seed=42)

    @property
    def label(self) -> str:
        parameter = {"adwin": "delta", "page_hinkley": "threshold", "kswin": "alpha"}[self.name]
        kind = {"adwin": "ADWIN", "page_hinkley": "PageHinkley", "kswin": "KSWIN"}[self.name]
        return f"{kind}({parameter}={self.setting:g})"


@dataclass(frozen=True)
class Transition:
    """A change of state of one signal, with the statistics an alert reports."""

    signal: str
    detector: str
    state: str  # drifting | recovered
    before: WindowStats
    after: WindowStats
    reference: WindowStats | None
    events_seen: int


class SignalMonitor:
    """A numeric signal (clipped to the reference's [low, high] and measured in reference
    standard deviations before it reaches the detector), or the 0/1 indicator of a
    category (``reference=None``, ``share`` = the category's reference share)."""

    def __init__(
        self,
        signal: str,
        spec: DetectorSpec,
        reference: Distribution | None = None,
        share: float | None = None,
        cooldown: int = 0,
    ) -> None:
        self.signal = signal
        self.cooldown = cooldown
        self.spec = spec
        self.label = spec.label
        self.reference = reference
        self.reference_stats = (
            WindowStats(n=reference.n, mean=reference.mean, std=reference.std)
            if reference is not None
            else WindowStats(n=0, mean=share, std=math.sqrt(share * (1 - share)))
            if share is not None
            else None
        )
        self.detector = spec.new()
        self.recent: deque[float] = deque(maxlen=KEPT_VALUES)
        self.events_seen = 0
        self.detections = 0
        self.state = "stable"
        self._since = 0  # values seen since the detector's last change, and their sum
        self._since_sum = 0.0
        self._baseline: WindowStats | None = None  # the level before the current drift
        self._quiet_until = 0  # events_seen from which an alert may be raised again
        self._deferred = False  # a detection during the cooldown, to judge when it ends

    def observe(self, value: float) -> Transition | None:
        if self.reference is not None:
            value = min(max(value, self.reference.low), self.reference.high)
            scaled = (value - self.reference.mean) / self.reference.std
        else:
            scaled = value
        self.recent.append(value)
        self.events_seen += 1
        self._since += 1
        self._since_sum += value
        self.detector.update(scaled)
        if self.detector.drift_detected:
            self.detections += 1
            if self.events_seen < self._quiet_until:
                self._deferred = True
                return None
            return self._judge()
        if self._deferred and self.events_seen >= self._quiet_until:
            return self._judge()
        return None

    def _judge(self) -> Transition | None:
        """The change among the values since the last one, and the alert it makes, if any."""
        self._deferred = False
        before, after = self._split()
        self._since, self._since_sum = after.n, after.mean * after.n
        transition = self._transition(before, after)
        if transition is not None:
            self._quiet_until = self.events_seen + self.cooldown
        return transition

    @property
    def window(self) -> tuple[int, float | None]:
        """How many values since the last change, and their mean."""
        return self._since, (self._since_sum / self._since if self._since else None)

    def _split(self) -> tuple[WindowStats, WindowStats]:
        """The values before the change and since it. Detectors say *that* the stream
        changed, not exactly where (and River's reset their window after a detection), so
        the change point is estimated among the values since the last one: the split
        that maximises the standardised difference of the two means (the maximum
        likelihood change point of a shift in mean)."""
        values = np.fromiter(self.recent, dtype=np.float64)[-min(self._since, len(self.recent)) :]
        n = len(values)
        if n < 2:
            return _stats(values[:0]), _stats(values)
        cumulative = np.cumsum(values)
        left = np.arange(1, n)
        left_mean = cumulative[:-1] / left
        right_mean = (cumulative[-1] - cumulative[:-1]) / (n - left)
        split = int(np.argmax(np.abs(left_mean - right_mean) * np.sqrt(left * (n - left) / n))) + 1
        return _stats(values[:split]), _stats(values[split:])

    def _transition(self, before: WindowStats, after: WindowStats) -> Transition | None:
        if self.state == "stable":
            reference = self.reference_stats
            if reference is not None and abs(after.mean - reference.mean) <= abs(before.mean - reference.mean):
                return None  # moved towards the reference: back to normal, not drift
            self.state, self._baseline = "drifting", before
            return self._report("drifting", before, after)
        assert self._baseline is not None
        if abs(after.mean - self._baseline.mean) < abs(after.mean - before.mean):
            self.state, self._baseline = "stable", None
            return self._report("recovered", before, after)
        return None  # drifting further, or elsewhere: still the same drift

    def _report(self, state: str, before: WindowStats, after: WindowStats) -> Transition:
        return Transition(self.signal, self.label, state, before, after, self.reference_stats, self.events_seen)


class ErrorMonitor:
    """The model's rolling mean absolute error (realised against real prices, or as its
    error estimator expects it), compared with its cross-validated error: drifting when
    it exceeds ``cv_mae * (1 + margin)`` over a full window, recovered when it is back
    under ``cv_mae * (1 + margin / 2)`` (the gap keeps it from flapping on the threshold);
    after an alert, its state holds for ``cooldown`` prices, then follows the rolling MAE
    again."""

    def __init__(
        self,
        signal: str,
        cv_mae: float,
        window: int,
        margin: float,
        cooldown: int = 0,
        kind: str = "RollingMAE",
    ) -> None:
        self.signal = signal
        self.cooldown = cooldown
        self._quiet_until = 0
        self.label = f"{kind}(window={window}, margin={margin:g})"
        self.cv_mae = cv_mae
        self.window_size = window
        self.alert_above = cv_mae * (1 + margin)
        self.recover_below = cv_mae * (1 + margin / 2)
        self.mean = utils.Rolling(stats.Mean, window_size=window)
        self.var = utils.Rolling(stats.Var, window_size=window)
        self.events_seen = 0
        self.state = "stable"
        self._stable_window: WindowStats | None = None

    def observe(self, predicted: float, actual: float) -> Transition | None:
        return self.observe_error(abs(predicted - actual))

    def observe_error(self, error: float) -> Transition | None:
        """One price's absolute error, realised or estimated."""
        self.mean.update(error)
        self.var.update(error)
        self.events_seen += 1
        if self.events_seen < self.window_size:
            return None
        current = self.current
        if self.state == "stable":
            if current.mean <= self.alert_above:
                self._stable_window = current
                return None
            return self._change("drifting", current)
        if current.mean < self.recover_below:
            return self._change("recovered", current)
        return None

    def _change(self, state: str, current: WindowStats) -> Transition | None:
        if self.events_seen < self._quiet_until:
            return None  # within the last alert's cooldown: judged again on the next price
        self.state = "drifting" if state == "drifting" else "stable"
        self._quiet_until = self.events_seen + self.cooldown
        return self._report(state, self._stable_window or self.reference_stats, current)

    @property
    def window(self) -> tuple[int, float | None]:
        n = min(self.events_seen, self.window_size)
        return n, (float(self.mean.get()) if n else None)

    @property
    def current(self) -> WindowStats:
        n = min(self.events_seen, self.window_size)
        return WindowStats(n=n, mean=float(self.mean.get()), std=math.sqrt(max(self.var.get(), 0.0)))

    @property
    def reference_stats(self) -> WindowStats:
        return WindowStats(n=0, mean=self.cv_mae, std=0.0)

    def _report(self, state: str, before: WindowStats, after: WindowStats) -> Transition:
        return Transition(self.signal, self.label, state, before, after, self.reference_stats, self.events_seen)


def _stats(values: np.ndarray) -> WindowStats:
    if not len(values):
        return WindowStats(n=0, mean=0.0, std=0.0)
    return WindowStats(n=len(values), mean=float(values.mean()), std=float(values.std()))
