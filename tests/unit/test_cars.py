import pandas as pd
import pytest
from pydantic import ValidationError

from schemas.cars import BRANDS, CAR_TYPES, FUELS, PAINT_COLORS, CarFeatures
from tests.helpers import SAMPLE_CAR

CAR = SAMPLE_CAR


def test_known_categories_are_exactly_those_of_the_training_data(pricing_csv):
    raw = pd.read_csv(pricing_csv)
    assert set(BRANDS) == set(raw["model_key"])
    assert set(FUELS) == set(raw["fuel"])
    assert set(PAINT_COLORS) == set(raw["paint_color"])
    assert set(CAR_TYPES) == set(raw["car_type"])


@pytest.mark.parametrize("spelling", ["Citroën", "Citroen", "citroen", " CITROËN "])
def test_brand_spellings_fold_to_the_training_spelling(spelling):
    car = CarFeatures(**{**CAR, "model_key": spelling})
    assert car.model_key == "Citroën"
    assert car.unknown_fields == []


def test_other_categories_are_case_insensitive():
    car = CarFeatures(**{**CAR, "fuel": "DIESEL", "paint_color": "Grey", "car_type": "SUV"})
    assert (car.fuel, car.paint_color, car.car_type) == ("diesel", "grey", "suv")


def test_unknown_brand_is_accepted_and_reported():
    car = CarFeatures(**{**CAR, "model_key": "Tesla"})
    assert car.model_key == "Tesla"
    assert car.unknown_fields == ["model_key"]


@pytest.mark.parametrize(
    "field, value",
    [("fuel", "kerosene"), ("paint_color", "plaid"), ("car_type", "tank")],
)
def test_unknown_non_brand_category_is_rejected_with_the_allowed_values(field, value):
    with pytest.raises(ValidationError) as error:
        CarFeatures(**{**CAR, field: value})
    assert field in str(error.value) and "expected one of" in str(error.value)


@pytest.mark.parametrize(
    "field, value",
    [("mileage", -1), ("mileage", 1_000_001), ("engine_power", 0), ("engine_power", 1001)],
)
def test_numbers_out_of_bounds_are_rejected(field, value):
    with pytest.raises(ValidationError):
        CarFeatures(**{**CAR, field: value})


def test_extra_fields_and_wrong_types_are_rejected():
    with pytest.raises(ValidationError):
        CarFeatures(**CAR, colour="red")
    with pytest.raises(ValidationError):
        CarFeatures(**{**CAR, "mileage": "a lot"})


def test_two_categories_that_fold_alike_are_refused_when_the_lookup_is_built():
    from schemas.cars import _lookup

    assert _lookup(("Citroën", "Audi")) == {"citroen": "Citroën", "audi": "Audi"}
    with pytest.raises(ValueError, match="ambiguous categories 'Citroën' and 'CITROEN'"):
        _lookup(("Citroën", "CITROEN"))
