"""The HTTP ``POST /predict`` contract: what a caller may send and what it gets back.

Three request shapes, told apart by their form:

* one car, a JSON object with the named fields of :class:`CarFeatures`, answered with
  one :class:`PricedCar`;
* a list of such cars, answered with a list of :class:`PricedCar` in the same order;
* the positional form of the original Getaround API, ``{"input": [[...], ...]}``, each
  inner list holding one car's values in ``POSITIONAL_ORDER``, answered with
  ``{"prediction": [price, ...]}``.

>>> from pydantic import TypeAdapter
>>> body = TypeAdapter(predict_body(max_cars=10))
>>> row = ["Citroën", 140411, 100, "diesel", "black", "convertible",
...        True, True, False, False, True, True, True]
>>> request = body.validate_python({"input": [row]})
>>> cars_of(request)[0].mileage
140411
>>> len(cars_of(body.validate_python([{"model_key": "Audi", "mileage": 5, "engine_power": 90,
...     "fuel": "petrol", "paint_color": "red", "car_type": "sedan"}] * 3)))
3
>>> body.validate_python({"input": [row] * 11})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for tagged-union[CarFeatures,list[CarFeatures],PositionalRequest]
positional.input
  List should have at most 10 items after validation, not 11 ...
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Discriminator, Field, Tag, WithJsonSchema, create_model

from schemas.cars import CarFeatures
from schemas.explanations import Explanation

POSITIONAL_ORDER: tuple[str, ...] = tuple(CarFeatures.model_fields)
IN_POSITIONAL_ORDER = "in this order: " + ", ".join(POSITIONAL_ORDER)


def _row_to_fields(row: Any) -> Any:
    """Name the values of one positional row (anything else is left for pydantic to reject)."""
    # ValueError, not TypeError: pydantic turns only the former into a validation error (422).
    if not isinstance(row, list | tuple):
        raise ValueError(f"a car is a list of {len(POSITIONAL_ORDER)} values {IN_POSITIONAL_ORDER}")  # noqa: TRY004
    if len(row) != len(POSITIONAL_ORDER):
        raise ValueError(f"expected {len(POSITIONAL_ORDER)} values {IN_POSITIONAL_ORDER}; got {len(row)}")
    return dict(zip(POSITIONAL_ORDER, row, strict=True))


def _positional_row_schema() -> dict[str, Any]:
    fields = CarFeatures.model_json_schema()["properties"]
    return {
        "type": "array",
        "description": f"One car's values, {IN_POSITIONAL_ORDER}",
        "prefixItems": [{**fields[name], "title": name} for name in POSITIONAL_ORDER],
        "minItems": len(POSITIONAL_ORDER),
        "maxItems": len(POSITIONAL_ORDER),
    }


PositionalCar = Annotated[CarFeatures, BeforeValidator(_row_to_fields), WithJsonSchema(_positional_row_schema())]


class PositionalRequest(BaseModel):
    """The original Getaround API form: one inner list of values per car."""

    input: list[PositionalCar] = Field(min_length=1)


class PositionalPrediction(BaseModel):
    prediction: list[float] = Field(description="Price per day in euros, one per input row, in order.")
    explanations: list[Explanation] | None = Field(
        None, description="With explain=true: why each price, one per input row, in order."
    )


class PricedCar(BaseModel):
    """The answer for one car of a named-field request."""

    request_id: str = Field(description="'<request id>/<position of the car in the request>'")
    price_per_day: float = Field(description="Predicted rental price per day, in euros.")
    price_lower: float | None = Field(
        description="Low end of the 80% price interval: 8 in 10 true prices fall between price_lower and "
        "price_upper (coverage measured on held-out folds at training). None if the model version has no interval."
    )
    price_upper: float | None = Field(description="High end of the 80% price interval.")
    estimated_error: float | None = Field(
        description="The absolute error in euros the version's error estimator expects of this price (an "
        "estimate of |price_per_day - true price|, learned at training from cross-validated errors). None if "
        "the model version has no estimator."
    )
    model_name: str
    model_version: str
    unknown_fields: list[str] = Field(
        description="Fields whose value the model has never seen (priced as missing), e.g. a new brand."
    )
    explanation: Explanation | None = Field(
        None, description="With explain=true: the base value and each feature's contribution, largest first."
    )


class ErrorReply(BaseModel):
    detail: str
    request_id: str | None = None


def _request_shape(body: Any) -> str | None:
    if isinstance(body, list):
        return "cars"
    if isinstance(body, dict):
        return "positional" if "input" in body else "car"
    return None  # pydantic reports the custom error below


def predict_body(max_cars: int) -> Any:
    """The request body type, with the configured most cars per request."""
    positional = create_model(
        "PositionalRequest",
        __base__=PositionalRequest,
        input=(list[PositionalCar], Field(min_length=1, max_length=max_cars)),
    )
    return Annotated[
        Annotated[CarFeatures, Tag("car")]
        | Annotated[list[CarFeatures], Tag("cars"), Field(min_length=1, max_length=max_cars)]
        | Annotated[positional, Tag("positional")],
        Discriminator(
            _request_shape,
            custom_error_type="invalid_body",
            custom_error_message='expected a car object, a list of cars, or {"input": [[...], ...]}',
        ),
    ]


def cars_of(body: CarFeatures | list[CarFeatures] | PositionalRequest) -> list[CarFeatures]:
    if isinstance(body, PositionalRequest):
        return list(body.input)
    if isinstance(body, CarFeatures):
        return [body]
    return list(body)


EXAMPLE_CAR = {
    "model_key": "Citroën",
    "mileage": 140411,
    "engine_power": 100,
    "fuel": "diesel",
    "paint_color": "black",
    "car_type": "convertible",
    "private_parking_available": True,
    "has_gps": True,
    "has_air_conditioning": False,
    "automatic_car": False,
    "has_getaround_connect": True,
    "has_speed_regulator": True,
    "winter_tires": True,
}

OPENAPI_EXAMPLES = {
    "one car": {"summary": "One car, named fields", "value": EXAMPLE_CAR},
    "several cars": {
        "summary": "A list of cars, named fields",
        "value": [EXAMPLE_CAR, {**EXAMPLE_CAR, "model_key": "Tesla", "fuel": "electro", "mileage": 20000}],
    },
    "positional": {
        "summary": "Original Getaround API form",
        "description": f"Each inner list holds one car's values {IN_POSITIONAL_ORDER}",
        "value": {"input": [[EXAMPLE_CAR[name] for name in POSITIONAL_ORDER]]},
    },
}
