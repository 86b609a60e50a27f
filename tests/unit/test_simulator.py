"""The simulator's stream: mix, ids, and shifts applied only where and when asked."""

from itertools import islice

import pytest

from producers.simulator import SIMULATED_ID_STRIDE, BadShift, Shift, Simulator
from schemas.cars import CarFeatures
from schemas.events import PriceRequest, RentalEvent
from tests.helpers import SAMPLE_CAR

CAR = CarFeatures(**SAMPLE_CAR)
HISTORY = [
    RentalEvent(rental_id=1, car_id=10, checkin_type="mobile", state="ended", delay_at_checkout_minutes=30, car=CAR),
    RentalEvent(
        rental_id=2,
        car_id=10,
        checkin_type="connect",
        state="ended",
        delay_at_checkout_minutes=-5,
        previous_ended_rental_id=1,
        planned_gap_minutes=60,
        car=CAR,
    ),
    RentalEvent(
        rental_id=3,
        car_id=11,
        checkin_type="connect",
        state="canceled",
        car=CAR.model_copy(update={"mileage": 700_000}),
    ),
]
LISTINGS = [(CAR.model_copy(update={"mileage": 1000 * i}), 100.0 + i) for i in range(10)]


def take(simulator, n):
    return list(islice(simulator.events(), n))


def test_price_requests_make_up_their_share_spread_evenly():
    events = take(Simulator(HISTORY, LISTINGS, price_request_share=0.2), 1000)
    kinds = [isinstance(e, PriceRequest) for _, _, e in events]
    assert sum(kinds) == 200
    assert all(sum(kinds[i : i + 5]) == 1 for i in range(0, 1000, 5))
    assert {t for t, _, e in events if isinstance(e, PriceRequest)} == {"price-requests"}
    assert all(e.listed_price_per_day in {p for _, p in LISTINGS} for _, _, e in events if isinstance(e, PriceRequest))


def test_each_pass_of_the_history_gets_new_ids_with_its_links_kept():
    rentals = [e for _, _, e in take(Simulator(HISTORY, LISTINGS, price_request_share=0), 6)]
    assert [r.rental_id for r in rentals] == [i + p * SIMULATED_ID_STRIDE for p in (1, 2) for i in (1, 2, 3)]
    assert rentals[4].previous_ended_rental_id == 1 + 2 * SIMULATED_ID_STRIDE
    assert HISTORY[1].rental_id == 2  # the history itself is untouched


def test_listings_come_in_a_seeded_shuffle_not_in_file_order():
    first = [
        e.listed_price_per_day for _, _, e in take(Simulator(HISTORY, LISTINGS, price_request_share=1, seed=1), 10)
    ]
    again = [
        e.listed_price_per_day for _, _, e in take(Simulator(HISTORY, LISTINGS, price_request_share=1, seed=1), 10)
    ]
    assert first == again and sorted(first) == [p for _, p in LISTINGS] and first != sorted(first)


def test_shifts_apply_from_event_n_on_and_only_to_their_target():
    shifts = [Shift.parse("mileage=x2"), Shift.parse("delay.connect=+120"), Shift.parse("price=x1.5")]
    plain = take(Simulator(HISTORY, LISTINGS, price_request_share=0.25, run_id="r"), 40)
    shifted = take(Simulator(HISTORY, LISTINGS, price_request_share=0.25, shifts=shifts, shift_from=20, run_id="r"), 40)
    for index, ((_, _, before), (_, _, after)) in enumerate(zip(plain, shifted, strict=True)):
        if index < 20:
            assert after.model_dump(exclude={"event_time"}) == before.model_dump(exclude={"event_time"})
            continue
        expected_mileage = min(before.car.mileage * 2, 1_000_000)  # the contract's ceiling
        assert after.car.mileage == expected_mileage
        if isinstance(before, PriceRequest):
            assert after.listed_price_per_day == pytest.approx(before.listed_price_per_day * 1.5)
        elif before.checkin_type == "connect" and before.delay_at_checkout_minutes is not None:
            assert after.delay_at_checkout_minutes == before.delay_at_checkout_minutes + 120
        else:
            assert after.delay_at_checkout_minutes == before.delay_at_checkout_minutes


@pytest.mark.parametrize("text", ["speed=x2", "mileage=2", "mileage=xx", "delay.bike=+1", "price="])
def test_bad_shifts_are_refused_with_the_reason(text):
    with pytest.raises(BadShift, match="expected one of|write x<factor>"):
        Shift.parse(text)


def test_a_mix_shift_draws_its_category_as_much_more_often_as_asked_from_event_n_on():
    # 2 of 10 listings are petrol; drawn 4 times as often, they are 8 of every 16 draws.
    listings = [
        (CAR.model_copy(update={"mileage": 1000 * i, "fuel": "petrol" if i < 2 else "diesel"}), 100.0 + i)
        for i in range(10)
    ]
    simulator = Simulator(
        HISTORY, listings, price_request_share=1.0, shifts=[Shift.parse("mix.fuel.Petrol=x4")], shift_from=1000
    )
    requests = [event for _, _, event in take(simulator, 11_000)]
    before, after = requests[:1000], requests[1000:]
    assert sum(r.car.fuel == "petrol" for r in before) == 200  # each listing once per deal of ten
    petrol = sum(r.car.fuel == "petrol" for r in after)
    expected, sigma = 10_000 * 0.5, (10_000 * 0.5 * 0.5) ** 0.5
    assert abs(petrol - expected) < 4 * sigma, petrol
    # Each listing keeps its own real price: the cars move, not their prices.
    assert {(r.car.mileage, r.listed_price_per_day) for r in after} <= {(c.mileage, p) for c, p in listings}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("mix.fuel.kerosene=x2", "unknown fuel"),
        ("mix.speed.fast=x2", "unknown mix"),
        ("mix.has_gps.maybe=x2", "unknown mix"),
        ("mix.fuel.petrol=+2", "x<factor>"),
        ("mix.fuel.petrol=x0", "above 0"),
    ],
)
def test_bad_mix_shifts_are_refused_with_the_reason(text, reason):
    with pytest.raises(BadShift, match=reason):
        Shift.parse(text)
