"""The three shapes a /predict body may take, their limits, and the errors a client
gets for each wrong one (schemas.predict), without the bridge around them."""

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.cars import CarFeatures
from schemas.predict import (
    EXAMPLE_CAR,
    POSITIONAL_ORDER,
    PositionalRequest,
    _positional_row_schema,
    cars_of,
    predict_body,
)

ROW = [EXAMPLE_CAR[name] for name in POSITIONAL_ORDER]


def body_type() -> TypeAdapter:
    """The bridge's body type for at most 3 cars, built in the test (as the bridge builds it at start)."""
    return TypeAdapter(predict_body(max_cars=3))


ORDER = (
    "in this order: model_key, mileage, engine_power, fuel, paint_color, car_type, private_parking_available, "
    "has_gps, has_air_conditioning, automatic_car, has_getaround_connect, has_speed_regulator, winter_tires"
)


def errors(body) -> list[tuple[str, tuple, str]]:
    with pytest.raises(ValidationError) as raised:
        body_type().validate_python(body)
    return [(e["type"], e["loc"], e["msg"]) for e in raised.value.errors()]


def test_each_shape_gives_its_cars_in_order():
    other = {**EXAMPLE_CAR, "mileage": 5}
    assert [c.mileage for c in cars_of(body_type().validate_python(EXAMPLE_CAR))] == [140411]
    assert [c.mileage for c in cars_of(body_type().validate_python([EXAMPLE_CAR, other]))] == [140411, 5]
    positional = body_type().validate_python({"input": [ROW, [*ROW[:1], 5, *ROW[2:]]]})
    assert isinstance(positional, PositionalRequest)
    assert cars_of(positional) == [CarFeatures(**EXAMPLE_CAR), CarFeatures(**other)]


@pytest.mark.parametrize(
    ("body", "kind", "loc"),
    [
        ([], "too_short", ("cars",)),
        ([EXAMPLE_CAR] * 4, "too_long", ("cars",)),
        ({"input": []}, "too_short", ("positional", "input")),
        ({"input": [ROW] * 4}, "too_long", ("positional", "input")),
    ],
)
def test_between_one_and_the_configured_most_cars_in_either_list(body, kind, loc):
    [(error_type, where, _)] = errors(body)
    assert (error_type, where) == (kind, loc)


def test_the_configured_most_cars_are_accepted_in_either_list():
    assert len(cars_of(body_type().validate_python([EXAMPLE_CAR] * 3))) == 3
    assert len(cars_of(body_type().validate_python({"input": [ROW] * 3}))) == 3


def test_a_body_of_no_known_shape_says_which_shapes_there_are():
    assert errors("a car") == [
        ("invalid_body", (), 'expected a car object, a list of cars, or {"input": [[...], ...]}')
    ]


def test_a_positional_row_that_is_not_a_list_or_has_the_wrong_length_says_the_order():
    [(_, loc, message)] = errors({"input": [EXAMPLE_CAR]})
    assert loc == ("positional", "input", 0) and message == f"Value error, a car is a list of 13 values {ORDER}"
    [(_, loc, message)] = errors({"input": [ROW[:-1]]})
    assert message == f"Value error, expected 13 values {ORDER}; got 12"


def test_the_documented_positional_row_is_the_cars_fields_in_order():
    schema = _positional_row_schema()
    fields = CarFeatures.model_json_schema()["properties"]
    assert schema["type"] == "array" and schema["minItems"] == schema["maxItems"] == 13
    assert schema["description"] == f"One car's values, {ORDER}"
    assert [item["title"] for item in schema["prefixItems"]] == list(POSITIONAL_ORDER)
    assert schema["prefixItems"][1] == {**fields["mileage"], "title": "mileage"}


def test_one_positional_row_is_enough_and_the_schema_names_its_shape():
    assert len(cars_of(body_type().validate_python({"input": [ROW]}))) == 1
    assert "PositionalRequest" in body_type().json_schema()["$defs"]  # the name /docs shows
