"""The topic catalogue: every topic the system uses, its key and its value contract."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    value: str


RENTALS = Topic("rentals", "car_id", "RentalEvent")
PRICE_REQUESTS = Topic("price-requests", "request_id", "PriceRequest")
PRICES = Topic("prices", "request id or rental id", "PriceScored")
# The scorer's answers to price requests that asked for a reply (the bridge's), kept
# apart from `prices` so the bridge does not read every rental's price to find them.
PRICE_REPLIES = Topic("price-replies", "request_id", "PriceScored")
DELAYS = Topic("delays", "car_id", "DelayScored")
DRIFT = Topic("drift", "stream/feature", "DriftAlert")
DEAD_LETTERS = Topic("dead-letters", "source key", "DeadLetter")

CATALOGUE: tuple[Topic, ...] = (RENTALS, PRICE_REQUESTS, PRICES, PRICE_REPLIES, DELAYS, DRIFT, DEAD_LETTERS)
