"""The published contracts say what the models enforce: the JSON Schemas in docs/ are the
models' own (regenerate with `python -m schemas.contracts write`), and the AsyncAPI
document lists every topic of the catalogue with its value's schema and the direction
in which rentalstream uses it."""

import json

import jsonschema
import pytest

from schemas.contracts import SCHEMAS_DIR, asyncapi, json_schemas
from schemas.topics import CATALOGUE, PRICE_REQUESTS, RENTALS

# A rental as a producer in another language would write it from the schema alone.
HAND_MADE_RENTAL = {
    "rental_id": 1,
    "car_id": 7,
    "checkin_type": "connect",
    "state": "ended",
    "delay_at_checkout_minutes": 12,
    "previous_ended_rental_id": None,
    "planned_gap_minutes": None,
    "car": {
        "model_key": "Renault",
        "mileage": 120000,
        "engine_power": 110,
        "fuel": "diesel",
        "paint_color": "grey",
        "car_type": "estate",
    },
}


def test_the_json_schemas_in_docs_are_the_models_own():
    for topic, schema in json_schemas().items():
        path = SCHEMAS_DIR / f"{topic}.json"
        assert path.exists(), f"{path} missing: run `python -m schemas.contracts write`"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run `python -m schemas.contracts write`"
    assert {p.stem for p in SCHEMAS_DIR.glob("*.json")} == {t.name for t in CATALOGUE}


def test_the_documented_schema_accepts_a_valid_rental_and_refuses_a_wrong_field():
    schema = json.loads((SCHEMAS_DIR / "rentals.json").read_text())
    jsonschema.validate(HAND_MADE_RENTAL, schema)
    with pytest.raises(jsonschema.ValidationError, match="delay_at_checkout_minutes|'late'"):
        jsonschema.validate({**HAND_MADE_RENTAL, "delay_at_checkout_minutes": "late"}, schema)


def test_the_asyncapi_document_has_every_topic_with_its_payload_and_direction():
    document = asyncapi().to_specification().to_jsonable()
    assert document["asyncapi"].startswith("3.")
    assert set(document["channels"]) == {t.name for t in CATALOGUE}
    actions = {name: operation["action"] for name, operation in document["operations"].items()}
    assert {name for name, action in actions.items() if action == "receive"} == {RENTALS.name, PRICE_REQUESTS.name}
    rental = document["components"]["schemas"]["RentalEvent"]
    assert set(rental["required"]) >= {"rental_id", "car_id", "checkin_type", "state", "car"}
    for channel in document["channels"].values():
        assert "Kafka key:" in channel["description"]
