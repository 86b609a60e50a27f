"""Every monitored signal, and which event feeds which.

Signals are named ``<stream>/<feature>``:

- from ``rentals``: ``mileage`` and ``engine_power`` of the car; the share of each
  category of the categorical fields (``fuel=diesel``, ``model_key=Renault`` ...) and of
  each equipment (``has_gps=true``); ``delay.<check-in type>``, the delay at checkout
  in minutes.
  The delay comes from ``rentals`` rather than ``delays``, where a rental's fact is
  published again when its previous rental arrives later: each rental counts once.
- from ``delays``: ``is_conflict``, the share of rentals whose previous rental made the
  driver wait, counted when that fact is complete (which happens once per rental).
- from ``prices``: ``price_per_day.rentals`` and ``price_per_day.requests``, the model's
  price of rented cars and of cars asked about, ``absolute_error`` (the rolling MAE)
  for prices whose real listed price is known, and ``estimated_error`` (the rolling MAE
  the version's error estimator expects, ``schemas.error_estimates``) for every price
  that carries an estimate. Beside the realised MAE, the watch also keeps the estimate
  over the same prices (``estimated_where_true``), so the two can be compared; it
  raises no alert.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from river import stats, utils

from monitor.detectors import DetectorSpec, ErrorMonitor, SignalMonitor, Transition
from schemas.cars import CATEGORICAL, EQUIPMENT, NUMERIC
from schemas.events import DelayScored, PriceScored, RentalEvent
from schemas.reference import ReferenceStats
from schemas.signals import CONFLICT_SIGNAL, ESTIMATED_MAE_SIGNAL, MAE_SIGNAL, delay_signal
from schemas.topics import PRICES, RENTALS

PRICE_SOURCES = ("rentals", "requests")  # the cars rented and the cars asked about


def numeric_signal(name: str) -> str:
    return f"{RENTALS.name}/{name}"


def category_signal(name: str, category: str) -> str:
    """The share of ``category`` among a categorical field's values (``true`` for an equipment)."""
    return f"{RENTALS.name}/{name}={category}"


def price_signal(source: str) -> str:
    return f"{PRICES.name}/price_per_day.{source}"


@dataclass(frozen=True)
class Origin:
    """Where the event that fed a signal came from."""

    topic: str
    partition: int
    offset: int
    event_id: str
    event_time: datetime


@dataclass(frozen=True)
class Fired:
    transition: Transition
    origin: Origin

    @property
    def alert_id(self) -> str:
        return f"{self.transition.signal}@{self.origin.topic}/{self.origin.partition}/{self.origin.offset}"


class DriftWatch:
    def __init__(
        self,
        reference: ReferenceStats,
        spec: DetectorSpec,
        *,
        mae_window: int = 500,
        mae_margin: float = 0.25,
        cooldown: int = 0,
    ) -> None:
        """``cooldown``: values of a signal after its alert before it may raise another
        (``monitor.detectors``)."""
        self.reference = reference
        self.spec = spec
        watch = partial(SignalMonitor, spec=spec, cooldown=cooldown)
        self.numeric = {name: watch(numeric_signal(name), reference=reference.numeric[name]) for name in NUMERIC}
        self.categories = {
            (name, category): watch(category_signal(name, category), share=share)
            for name in CATEGORICAL
            for category, share in reference.category_shares[name].items()
        }
        self.equipment = {
            name: watch(category_signal(name, "true"), share=reference.category_shares[name]["true"])
            for name in EQUIPMENT
        }
        self.delays = {
            checkin_type: watch(delay_signal(checkin_type), reference=distribution)
            for checkin_type, distribution in reference.delays.items()
        }
        self.conflicts = watch(CONFLICT_SIGNAL, share=reference.conflict_share)
        # Two populations, two signals: the cars rented and the cars asked about. The scorer
        # publishes their prices in batches of one kind, so one signal would see the mix
        # change every batch.
        self.prices = {
            source: watch(price_signal(source), reference=reference.predicted_price) for source in PRICE_SOURCES
        }
        self.error = ErrorMonitor(MAE_SIGNAL, reference.cv_mae, mae_window, mae_margin, cooldown)
        self.estimated_error = ErrorMonitor(
            ESTIMATED_MAE_SIGNAL, reference.cv_mae, mae_window, mae_margin, cooldown, kind="RollingEstimatedMAE"
        )
        self.estimated_where_true = utils.Rolling(stats.Mean, window_size=mae_window)

    def monitors(self) -> Iterator[SignalMonitor | ErrorMonitor]:
        yield from self.numeric.values()
        yield from self.categories.values()
        yield from self.equipment.values()
        yield from self.delays.values()
        yield self.conflicts
        yield from self.prices.values()
        yield self.error
        yield self.estimated_error

    def observe_rental(self, event: RentalEvent, origin: Origin) -> list[Fired]:
        car = event.car
        changes = [self.numeric[name].observe(getattr(car, name)) for name in NUMERIC]
        for (name, category), monitor in self.categories.items():
            changes.append(monitor.observe(1.0 if getattr(car, name) == category else 0.0))
        for name, monitor in self.equipment.items():
            changes.append(monitor.observe(1.0 if getattr(car, name) else 0.0))
        delay = self.delays.get(event.checkin_type)
        if delay is not None and event.delay_at_checkout_minutes is not None:
            changes.append(delay.observe(event.delay_at_checkout_minutes))
        return [Fired(t, origin) for t in changes if t is not None]

    def observe_price(self, price: PriceScored, origin: Origin) -> list[Fired]:
        changes = [self.prices["rentals" if price.rental_id is not None else "requests"].observe(price.price_per_day)]
        if price.listed_price_per_day is not None:
            changes.append(self.error.observe(price.price_per_day, price.listed_price_per_day))
            if price.estimated_error is not None:
                self.estimated_where_true.update(price.estimated_error)
        if price.estimated_error is not None:
            changes.append(self.estimated_error.observe_error(price.estimated_error))
        return [Fired(t, origin) for t in changes if t is not None]

    def observe_delay(self, fact: DelayScored, origin: Origin) -> list[Fired]:
        if fact.is_conflict is None:
            return []
        change = self.conflicts.observe(1.0 if fact.is_conflict else 0.0)
        return [Fired(change, origin)] if change is not None else []
