"""When drift sets off a retrain (``RENTALSTREAM_RETRAIN=challenger``): the rules alone,
on the monitor's alerts as stored, so they can be read and tested apart from the
service that acts on them (``training.retrainer``).

An alert sets off a retrain when all of these hold:

- it says a signal started **drifting**, and the signal concerns the price model
  (``schemas.signals.concerns_prices``: not the checkout delays);
- the signal is **still drifting** in the monitor's current view, on that same alert
  (``drift_signals.last_alert_id``);
- it is an alert of the model's error (realised or estimated MAE above the
  cross-validated MAE × (1 + the monitor's margin)), or it has been drifting for
  ``sustain_seconds`` (a **sustained** drift);
- it came **after the start of the last retrain**: the alerts a retrain answered, and
  those it was already training on, never start another;
- **no retrain is in flight**, and the last one that registered a challenger finished
  at least ``cooldown`` ago, or its challenger has already been **weighed** (it priced
  enough requests whose true price came back for ``promote --if-better`` to decide):
  the challenger gets that long, at most, to be weighed on live traffic before another
  can replace it. An alert raised meanwhile is not lost: it sets off a retrain when the
  cooldown ends, if its signal is still drifting.

Of several, the earliest goes first; one retrain answers every alert before its start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.signals import ESTIMATED_MAE_SIGNAL, MAE_SIGNAL, concerns_prices

ERROR_SIGNALS = frozenset({MAE_SIGNAL, ESTIMATED_MAE_SIGNAL})
ERROR = "error"
SUSTAINED = "sustained drift"


@dataclass(frozen=True)
class Alert:
    """A stored drift alert, with its signal's state now."""

    alert_id: str
    signal: str
    state: str  # what the alert says: drifting | stable
    detected_at: datetime
    signal_state: str  # the signal's state now
    signal_last_alert_id: str | None


@dataclass(frozen=True)
class Due:
    alert: Alert
    reason: str  # ERROR | SUSTAINED


def reason(alert: Alert) -> str:
    return ERROR if alert.signal in ERROR_SIGNALS else SUSTAINED


def cooling_down(now: datetime, last_registered: datetime | None, cooldown: timedelta) -> bool:
    """Whether the last challenger registered (at ``last_registered``) is still within its
    cooldown, whether or not it has been weighed."""
    return last_registered is not None and now - last_registered < cooldown


def first_due(
    alerts: Iterable[Alert],
    *,
    now: datetime,
    sustain: timedelta,
    last_start: datetime | None,
    in_flight: bool,
    last_registered: datetime | None = None,
    cooldown: timedelta = timedelta(0),
    weighed: bool = False,
) -> Due | None:
    """The alert that sets off a retrain now, if any (the rules above); ``last_registered``:
    when the last retrain that registered a challenger finished; ``weighed``: whether its
    challenger has been weighed on live traffic already."""
    if in_flight or (cooling_down(now, last_registered, cooldown) and not weighed):
        return None
    for alert in sorted(alerts, key=lambda a: a.detected_at):
        if alert.state != "drifting" or not concerns_prices(alert.signal):
            continue
        if last_start is not None and alert.detected_at <= last_start:
            continue
        if alert.signal_state != "drifting" or alert.signal_last_alert_id != alert.alert_id:
            continue
        why = reason(alert)
        if why == ERROR or now - alert.detected_at >= sustain:
            return Due(alert, why)
    return None
