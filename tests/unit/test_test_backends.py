"""The container backend, checked without a Docker engine: what tests/containers.py
gives each container is compose.yaml's, except where this machine reaches it."""

from tests.compose import COMPOSE, SERVICES
from tests.containers import kafka_bootstrap, kafka_spec, postgres_spec, postgres_url
from tests.helpers import once


def test_the_containers_run_composes_images():
    assert kafka_spec(40001).image == COMPOSE["services"]["kafka"]["image"] == "apache/kafka:4.4.0"
    assert postgres_spec(40002).image == COMPOSE["services"]["postgres"]["image"]


def test_kafka_keeps_composes_settings_and_advertises_the_published_port():
    spec = kafka_spec(40001)
    compose_env = {name: str(value) for name, value in SERVICES["kafka"]["environment"].items()}
    changed = {name for name, value in compose_env.items() if spec.env.get(name) != value}
    dropped = {name for name in compose_env if name not in spec.env}
    assert changed - dropped == {"KAFKA_ADVERTISED_LISTENERS", "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"}
    assert spec.env["KAFKA_ADVERTISED_LISTENERS"] == "INTERNAL://kafka:9092,HOST://127.0.0.1:40001"
    # The suite speaks plaintext to its broker, as to the embedded one: no TLS, logins or ACLs.
    assert spec.env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] == "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,HOST:PLAINTEXT"
    assert dropped == {
        "KAFKA_SASL_ENABLED_MECHANISMS",
        "KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL",
        "KAFKA_OPTS",
        "KAFKA_LISTENER_NAME_CONTROLLER_SSL_CLIENT_AUTH",
        "KAFKA_SSL_KEYSTORE_TYPE",
        "KAFKA_SSL_KEYSTORE_LOCATION",
        "KAFKA_SSL_TRUSTSTORE_TYPE",
        "KAFKA_SSL_TRUSTSTORE_LOCATION",
        "KAFKA_AUTHORIZER_CLASS_NAME",
        "KAFKA_SUPER_USERS",
    }
    assert "KAFKA_INTER_BROKER_LISTENER_NAME" in spec.env and "KAFKA_LOG_DIRS" in spec.env
    assert spec.ports == {9094: 40001}  # compose publishes the HOST listener, 9094
    assert spec.hostname == "kafka"  # compose's quorum, 1@kafka:9093, resolves inside
    assert kafka_bootstrap(spec) == "127.0.0.1:40001"


def test_postgres_gets_composes_user_and_database_on_the_published_port():
    spec = postgres_spec(40002)
    assert spec.env == {
        "POSTGRES_USER": "rentalstream",
        "POSTGRES_PASSWORD": "rentalstream",
        "POSTGRES_DB": "rentalstream",
    }
    assert spec.ports == {5432: 40002}
    assert postgres_url(spec) == "postgresql://rentalstream:rentalstream@127.0.0.1:40002/rentalstream"


def test_a_server_stopped_by_its_test_is_not_stopped_again_by_the_fixture():
    stops = []
    stop = once(lambda: stops.append(1))
    stop()
    stop()
    assert stops == [1]
