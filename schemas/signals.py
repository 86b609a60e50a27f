"""The names of the monitor's signals that other components act on (``<stream>/<feature>``;
``monitor.watch`` names them all)."""

from __future__ import annotations

from schemas.topics import DELAYS, PRICES, RENTALS

MAE_SIGNAL = f"{PRICES.name}/absolute_error"  # the rolling MAE where the real price is known
ESTIMATED_MAE_SIGNAL = f"{PRICES.name}/estimated_error"  # the rolling MAE the error estimator expects
CONFLICT_SIGNAL = f"{DELAYS.name}/is_conflict"
DELAY_PREFIX = f"{RENTALS.name}/delay."  # a check-in type's delay at checkout: rentals/delay.connect


def delay_signal(checkin_type: str) -> str:
    return f"{DELAY_PREFIX}{checkin_type}"


def concerns_prices(signal: str) -> bool:
    """Whether a change of ``signal`` can make the price model wrong: every signal but the
    delays' (the cars rented and asked about, their prices, the model's error)."""
    return signal != CONFLICT_SIGNAL and not signal.startswith(DELAY_PREFIX)
