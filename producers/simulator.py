"""The live simulator: a steady stream of rentals and price requests drawn from the two
datasets, with optional injected shifts, for the drift monitor, the dashboard and the
sustained-rate benchmark.

- **Rentals** are the delay history, pass after pass, in file order, each rental with
  its car's profile (as the replay sends them). Pass ``p`` (from 1) adds
  ``p * SIMULATED_ID_STRIDE`` to rental ids and previous-rental ids, so simulated
  rentals never collide with the replayed history, and each pass keeps the history's
  links between a rental and the previous one of its car.
- **Price requests** are listings of the pricing dataset, in a seeded shuffled order
  (the file is sorted by car type), each carrying its real price in
  ``listed_price_per_day`` so the monitor can track the model's error. They make up
  ``price_request_share`` of the stream, spread evenly.
- **Shifts** (``Shift.parse("mileage=x2")``) change events from event index
  ``shift_from`` on (counting every event of the stream from 0). Most change a value of
  each event (the cars stay the cars, their fields or prices move); a *mix* shift
  (``mix.<field>.<category>=x<factor>``) changes which cars are asked about instead:
  listings of that category (or equipment, ``true``/``false``) are drawn ``factor``
  times as often, each listing with its own real price. Rentals keep their cars.

>>> [Shift.parse(s).describe() for s in ("mileage=x2", "delay.connect=+120", "price=x1.5", "mix.fuel.Petrol=x4")]
['mileage x2', 'delay.connect +120', 'price x1.5', 'mix.fuel.petrol x4']
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from producers.car_profiles import read_profile_pool
from producers.replay import rental_events
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from schemas.cars import CATEGORICAL, EQUIPMENT, MAX_ENGINE_POWER_HP, MAX_MILEAGE_KM, CarFeatures, canonical_category
from schemas.events import MAX_ABS_DELAY_MINUTES, MAX_PRICE_PER_DAY, PriceRequest, RentalEvent
from schemas.topics import PRICE_REQUESTS, RENTALS

SIMULATED_ID_STRIDE = 10_000_000  # above every rental id of the history (max ~570k)
TARGETS = ("mileage", "engine_power", "delay", "delay.mobile", "delay.connect", "price")
MIX = "mix."


class BadShift(ValueError):
    pass


@dataclass(frozen=True)
class Shift:
    """``<target>=x<factor>`` or ``<target>=+<minutes or units>`` (or ``-``).

    Targets: mileage and engine_power of every car (rentals and listings); delay at
    checkout of every rental, or of one check-in type (``delay.connect``); the listed
    price of listings (``price``: the world's prices move, the cars do not); the mix of
    listings asked about (``mix.<field>.<category>``, ``x`` only). Results are kept
    inside the event contracts (a mileage stops at 1,000,000 km)."""

    target: str
    operation: Literal["x", "+"]
    amount: float

    @classmethod
    def parse(cls, text: str) -> Shift:
        target, _, change = text.replace(" ", "").partition("=")
        if target.startswith(MIX):
            target = _mix_target(target, text)
            if not change.startswith("x"):
                raise BadShift(f"a mix changes how often listings are drawn: write x<factor> in {text!r}")
        elif target not in TARGETS:
            raise BadShift(
                f"unknown shift target {target!r} in {text!r}; expected one of: {', '.join(TARGETS)}, "
                "or mix.<field>.<category>"
            )
        try:
            if change.startswith("x"):
                shift = cls(target, "x", float(change[1:]))
                if not target.startswith(MIX) or shift.amount > 0:
                    return shift
            if change[:1] in ("+", "-"):
                return cls(target, "+", float(change))
        except ValueError:
            pass
        if target.startswith(MIX):
            raise BadShift(f"write x<factor> with a factor above 0 (x10, x0.5) for a mix, in {text!r}")
        raise BadShift(f"bad change {change!r} in {text!r}; write x<factor> (x2, x0.5) or +<amount> (+120, -30)")

    def describe(self) -> str:
        if self.operation == "x":
            return f"{self.target} x{self.amount:g}"
        return f"{self.target} {self.amount:+g}"

    def apply(self, value: float) -> float:
        return value * self.amount if self.operation == "x" else value + self.amount

    def weight(self, car: CarFeatures) -> float:
        """How much more often a mix shift draws ``car`` (1 for other shifts and other cars)."""
        if not self.target.startswith(MIX):
            return 1.0
        field, _, category = self.target[len(MIX) :].partition(".")
        value = getattr(car, field)
        matches = str(value).lower() == category if isinstance(value, bool) else value.lower() == category
        return self.amount if matches else 1.0


def _mix_target(target: str, text: str) -> str:
    """``mix.<field>.<category>`` with the category as the contract spells it, lower-cased."""
    field, _, category = target[len(MIX) :].partition(".")
    if field in EQUIPMENT and category.lower() in ("true", "false"):
        return f"{MIX}{field}.{category.lower()}"
    if field in CATEGORICAL:
        canonical = canonical_category(field, category)
        if canonical is not None:
            return f"{MIX}{field}.{canonical.lower()}"
        raise BadShift(f"unknown {field} {category!r} in {text!r}")
    raise BadShift(
        f"unknown mix {target!r} in {text!r}; write mix.<field>.<category> with a field among "
        f"{', '.join([*CATEGORICAL, *EQUIPMENT])} (an equipment's category: true or false)"
    )


@dataclass
class Simulator:
    history: Sequence[RentalEvent]
    listings: Sequence[tuple[CarFeatures, float]]
    price_request_share: float = 0.2
    shifts: Sequence[Shift] = ()
    shift_from: int = 0
    seed: int = 42
    run_id: str = ""

    @classmethod
    def from_data_dir(cls, data_dir: Path, **options) -> Simulator:
        """A simulator over the two datasets of ``data_dir`` (downloaded if missing)."""
        pricing_csv = dataset_path(PRICING_CSV, data_dir)
        return cls(
            rental_events(dataset_path(DELAYS_XLSX, data_dir), pricing_csv), read_profile_pool(pricing_csv), **options
        )

    def __post_init__(self) -> None:
        if not 0 <= self.price_request_share <= 1:
            raise ValueError("price_request_share is a share, between 0 and 1")
        if self.price_request_share < 1 and not self.history:
            raise ValueError("no rentals to simulate from")
        if self.price_request_share > 0 and not self.listings:
            raise ValueError("no listings to simulate price requests from")
        self.run_id = self.run_id or uuid.uuid4().hex[:8]

    def events(self) -> Iterator[tuple[str, str, BaseModel]]:
        """(topic, key, event), without end."""
        rentals, listings = self._rentals(), self._listings()
        mixed = self._mixed_listings([s for s in self.shifts if s.target.startswith(MIX)])
        share = self.price_request_share
        for index in count():
            shifted = [s for s in self.shifts if index >= self.shift_from]
            if math.floor((index + 1) * share) > math.floor(index * share):
                car, price = next(mixed if mixed is not None and index >= self.shift_from else listings)
                request = PriceRequest(
                    request_id=f"sim-{self.run_id}-{index}",
                    car=shift_car(car, shifted),
                    client="simulator",
                    listed_price_per_day=shift_price(price, shifted),
                )
                yield PRICE_REQUESTS.name, request.request_id, request
            else:
                rental = shift_rental(next(rentals), shifted)
                yield RENTALS.name, str(rental.car_id), rental

    def _rentals(self) -> Iterator[RentalEvent]:
        for history_pass in count(1):
            offset = history_pass * SIMULATED_ID_STRIDE
            for event in self.history:
                previous = event.previous_ended_rental_id
                yield event.model_copy(
                    update={
                        "rental_id": event.rental_id + offset,
                        "previous_ended_rental_id": previous + offset if previous is not None else None,
                    }
                )

    def _mixed_listings(self, mixes: Sequence[Shift]) -> Iterator[tuple[CarFeatures, float]] | None:
        """Listings drawn with replacement, each weighted by every mix shift; None without one."""
        if not mixes:
            return None
        rng = random.Random(self.seed + 1)
        weights = [math.prod(mix.weight(car) for mix in mixes) for car, _ in self.listings]

        def draws() -> Iterator[tuple[CarFeatures, float]]:
            while True:
                yield from rng.choices(self.listings, weights=weights, k=1024)

        return draws()

    def _listings(self) -> Iterator[tuple[CarFeatures, float]]:
        rng = random.Random(self.seed)
        while True:
            order = list(self.listings)
            rng.shuffle(order)
            yield from order


def shift_car(car: CarFeatures, shifts: Sequence[Shift]) -> CarFeatures:
    changes = {}
    for shift in shifts:
        if shift.target == "mileage":
            changes["mileage"] = _bounded(shift.apply(changes.get("mileage", car.mileage)), 0, MAX_MILEAGE_KM)
        elif shift.target == "engine_power":
            power = shift.apply(changes.get("engine_power", car.engine_power))
            changes["engine_power"] = _bounded(power, 1, MAX_ENGINE_POWER_HP)
    return car.model_copy(update=changes) if changes else car


def shift_rental(event: RentalEvent, shifts: Sequence[Shift]) -> RentalEvent:
    car = shift_car(event.car, shifts)
    delay = event.delay_at_checkout_minutes
    for shift in shifts:
        if delay is not None and shift.target in ("delay", f"delay.{event.checkin_type}"):
            delay = _bounded(shift.apply(delay), -MAX_ABS_DELAY_MINUTES, MAX_ABS_DELAY_MINUTES)
    if car is event.car and delay == event.delay_at_checkout_minutes:
        return event
    return event.model_copy(update={"car": car, "delay_at_checkout_minutes": delay})


def shift_price(price: float, shifts: Sequence[Shift]) -> float:
    for shift in shifts:
        if shift.target == "price":
            price = min(max(shift.apply(price), 1.0), MAX_PRICE_PER_DAY)
    return price


def _bounded(value: float, low: int, high: int) -> int:
    return int(min(max(round(value), low), high))
