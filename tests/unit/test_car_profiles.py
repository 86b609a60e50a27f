import hashlib

import pandas as pd

from producers.car_profiles import assign_profiles, connect_cars, read_profile_pool


def test_pool_is_the_pricing_rows_inside_the_contract(pricing_csv):
    raw = pd.read_csv(pricing_csv, index_col=0)
    valid = raw[(raw.mileage >= 0) & (raw.mileage <= 1_000_000) & (raw.engine_power > 0)]
    pool = read_profile_pool(pricing_csv)
    assert len(pool) == len(valid)
    assert [price for _, price in pool] == valid.rental_price_per_day.astype(float).tolist()


def test_profiles_are_deterministic_and_follow_the_documented_rule(pricing_csv):
    pool = read_profile_pool(pricing_csv)
    profiles = assign_profiles([363965, 269550], connect_car_ids={269550}, pool=pool)
    connect_pool = [car for car, _ in pool if car.has_getaround_connect]

    def documented_index(car_id: int, size: int) -> int:  # docs/streams.md, "Car profiles"
        return int(hashlib.sha256(str(car_id).encode()).hexdigest()[:16], 16) % size

    # sha256("363965") begins 89c4ee16a135195e, and 0x89c4ee16a135195e mod 1000 is 686.
    assert documented_index(363965, 1_000) == 0x89C4EE16A135195E % 1_000 == 686
    assert profiles[363965] == pool[documented_index(363965, len(pool))][0]
    assert profiles[269550] == connect_pool[documented_index(269550, len(connect_pool))]
    assert profiles[269550].has_getaround_connect
    assert assign_profiles([269550, 363965], {269550}, pool) == profiles  # order-independent


def test_connect_cars_are_those_checked_in_with_connect_at_least_once():
    rows = [
        {"car_id": 1, "checkin_type": "mobile"},
        {"car_id": 1, "checkin_type": "connect"},
        {"car_id": 2, "checkin_type": "mobile"},
    ]
    assert connect_cars(rows) == {1}
