"""The car contract: what a priceable car looks like.

The categorical fields accept the categories of the training data
(``get_around_pricing_project.csv``). Matching ignores case, accents and surrounding
blanks wherever that is unambiguous, so ``citroen`` and ``Citroën`` are the same brand.
An unknown brand is accepted (a new brand should still get a price) but reported in
``unknown_fields``; an unknown fuel, colour or car type is an error because the model
has never seen anything like it.

>>> car = CarFeatures(model_key="citroen", mileage=140411, engine_power=100,
...     fuel="Diesel", paint_color="black", car_type="convertible")
>>> car.model_key, car.fuel, car.unknown_fields
('Citroën', 'diesel', [])
>>> CarFeatures(model_key="Tesla", mileage=10, engine_power=300, fuel="electro",
...     paint_color="white", car_type="sedan").unknown_fields
['model_key']
"""

from __future__ import annotations

import unicodedata

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.text import NO_CONTROL_CHARACTERS, no_control_characters

BRANDS = (
    "Alfa Romeo",
    "Audi",
    "BMW",
    "Citroën",
    "Ferrari",
    "Fiat",
    "Ford",
    "Honda",
    "KIA Motors",
    "Lamborghini",
    "Lexus",
    "Maserati",
    "Mazda",
    "Mercedes",
    "Mini",
    "Mitsubishi",
    "Nissan",
    "Opel",
    "PGO",
    "Peugeot",
    "Porsche",
    "Renault",
    "SEAT",
    "Subaru",
    "Suzuki",
    "Toyota",
    "Volkswagen",
    "Yamaha",
)
FUELS = ("diesel", "electro", "hybrid_petrol", "petrol")
PAINT_COLORS = (
    "beige",
    "black",
    "blue",
    "brown",
    "green",
    "grey",
    "orange",
    "red",
    "silver",
    "white",
)
CAR_TYPES = (
    "convertible",
    "coupe",
    "estate",
    "hatchback",
    "sedan",
    "subcompact",
    "suv",
    "van",
)
EQUIPMENT = (
    "private_parking_available",
    "has_gps",
    "has_air_conditioning",
    "automatic_car",
    "has_getaround_connect",
    "has_speed_regulator",
    "winter_tires",
)
NUMERIC = ("mileage", "engine_power")
CATEGORICAL = {
    "model_key": BRANDS,
    "fuel": FUELS,
    "paint_color": PAINT_COLORS,
    "car_type": CAR_TYPES,
}

MAX_MILEAGE_KM = 1_000_000
MAX_ENGINE_POWER_HP = 1_000


def fold(text: str) -> str:
    """Case-, accent- and blank-insensitive key of a category name."""
    decomposed = unicodedata.normalize("NFKD", text.strip().casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _lookup(categories: tuple[str, ...]) -> dict[str, str]:
    table: dict[str, str] = {}
    for name in categories:
        key = fold(name)
        if key in table:  # two categories fold alike: folding would be ambiguous
            raise ValueError(f"ambiguous categories {table[key]!r} and {name!r}")
        table[key] = name
    return table


_CANONICAL = {field: _lookup(values) for field, values in CATEGORICAL.items()}
_EXACT = {field: frozenset(values) for field, values in CATEGORICAL.items()}


def canonical_category(field: str, value: str) -> str | None:
    """The training-data spelling of ``value``, or None when it is not a known category."""
    if value in _EXACT[field]:  # nearly every event: skip the Unicode folding
        return value
    return _CANONICAL[field].get(fold(value))


class CarFeatures(BaseModel):
    """One car as the price model sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_key: str = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"pattern": NO_CONTROL_CHARACTERS},
        description="Brand; an unknown one is priced as missing and reported in unknown_fields",
    )
    mileage: int = Field(ge=0, le=MAX_MILEAGE_KM, description="Kilometres")
    engine_power: int = Field(gt=0, le=MAX_ENGINE_POWER_HP, description="Horsepower")
    fuel: str = Field(description="One of: " + ", ".join(FUELS) + " (case-insensitive)")
    paint_color: str = Field(description="One of: " + ", ".join(PAINT_COLORS) + " (case-insensitive)")
    car_type: str = Field(description="One of: " + ", ".join(CAR_TYPES) + " (case-insensitive)")
    private_parking_available: bool = False
    has_gps: bool = False
    has_air_conditioning: bool = False
    automatic_car: bool = False
    has_getaround_connect: bool = False
    has_speed_regulator: bool = False
    winter_tires: bool = False

    @field_validator("model_key")
    @classmethod
    def _known_brand_spelling(cls, value: str) -> str:
        return canonical_category("model_key", value) or no_control_characters(value).strip()

    @field_validator("fuel", "paint_color", "car_type")
    @classmethod
    def _known_category(cls, value: str, info) -> str:
        canonical = canonical_category(info.field_name, value)
        if canonical is None:
            allowed = ", ".join(CATEGORICAL[info.field_name])
            raise ValueError(f"unknown {info.field_name} {value!r}; expected one of: {allowed}")
        return canonical

    @property
    def unknown_fields(self) -> list[str]:
        """Fields whose value the model has not seen in training (priced as missing)."""
        return [] if self.model_key in BRANDS else ["model_key"]
