"""Which reference the monitor follows as versions change (monitor.reference_choice)."""

from datetime import UTC, datetime

from monitor.reference_choice import version_to_load
from schemas.events import PriceScored

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def prices(*versions: str, model: str = "rentalstream-price") -> list[PriceScored]:
    return [
        PriceScored(
            price_id=f"rental-{i}",
            price_per_day=100.0,
            model_name=model,
            model_version=v,
            event_time=NOW,
            scored_at=NOW,
        )
        for i, v in enumerate(versions)
    ]


def test_a_batch_priced_by_another_version_switches_to_it_whether_newer_or_older():
    assert version_to_load(prices("2", "2"), "rentalstream-price", "1", set()) == "2"  # a promotion
    assert version_to_load(prices("1", "1"), "rentalstream-price", "2", set()) == "1"  # a rollback


def test_the_reference_stays_for_its_own_version_a_mixed_batch_or_no_price():
    assert version_to_load(prices("1", "1"), "rentalstream-price", "1", set()) is None
    assert version_to_load(prices("1", "2"), "rentalstream-price", "1", set()) is None  # mid-promotion
    assert version_to_load([], "rentalstream-price", "1", set()) is None


def test_a_version_known_to_have_no_reference_is_not_asked_for_again():
    assert version_to_load(prices("3"), "rentalstream-price", "1", {"3"}) is None


def test_prices_of_another_model_or_a_version_no_registry_gives_are_ignored():
    assert version_to_load(prices("2", model="other-model"), "rentalstream-price", "1", set()) is None
    assert version_to_load(prices("latest"), "rentalstream-price", "1", set()) is None
