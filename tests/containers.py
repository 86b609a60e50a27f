"""The test backend on a Docker engine: compose.yaml's own Kafka and PostgreSQL images,
configured from compose's own environment, run by testcontainers.

What the containers get is worked out here, apart from Docker, so that a machine with
no Docker engine (the one this project is developed on) can still check it against
compose.yaml (tests/unit/test_test_backends.py). Starting them needs an engine; that
path has not been run on the development machine (docs/development.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.compose import ADDRESS, SERVICES, kafka_image_environment, with_defaults, without_security

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ContainerSpec:
    """One container as the tests run it: compose's image and environment, its
    published ports moved to free ports on this machine's loopback."""

    image: str
    env: dict[str, str]
    ports: dict[int, int]  # container port -> host port on 127.0.0.1
    hostname: str


def published_ports(service: str) -> dict[int, int]:
    """compose's ``ports`` of ``service`` as {container port: host port}."""
    found = {}
    for entry in SERVICES[service].get("ports", []):
        *_, host, inside = with_defaults(entry).split(":")
        found[int(inside)] = int(host)
    return found


def kafka_spec(host_port: int) -> ContainerSpec:
    """compose's ``kafka`` service, its host listener published on ``host_port``.

    The container is named ``kafka`` as on compose's network, so compose's controller
    quorum (``1@kafka:9093``) and internal listener resolve inside it unchanged. Only
    the listener the host reaches is advertised where this machine reaches it, and
    every listener speaks plaintext, as the embedded broker the suite is written for
    (``without_security``)."""
    compose_ports = published_ports("kafka")
    env = without_security(kafka_image_environment(SERVICES["kafka"]["environment"]))
    env["KAFKA_ADVERTISED_LISTENERS"] = ADDRESS.sub(
        lambda m: f"{m['scheme'] or ''}{LOOPBACK}:{host_port}" if int(m["port"]) in compose_ports.values() else m[0],
        env["KAFKA_ADVERTISED_LISTENERS"],
    )
    (inside,) = compose_ports
    return ContainerSpec(SERVICES["kafka"]["image"], env, {inside: host_port}, hostname="kafka")


def postgres_spec(host_port: int) -> ContainerSpec:
    """compose's ``postgres`` service (its user, password and database), published on ``host_port``."""
    env = {name: with_defaults(value) for name, value in SERVICES["postgres"]["environment"].items()}
    (inside,) = published_ports("postgres")
    return ContainerSpec(SERVICES["postgres"]["image"], env, {inside: host_port}, hostname="postgres")


def postgres_url(spec: ContainerSpec) -> str:
    env = spec.env
    (host_port,) = spec.ports.values()
    return f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@{LOOPBACK}:{host_port}/{env['POSTGRES_DB']}"


def kafka_bootstrap(spec: ContainerSpec) -> str:
    (host_port,) = spec.ports.values()
    return f"{LOOPBACK}:{host_port}"


def _on_loopback(container, spec: ContainerSpec):
    # docker-py takes (host ip, port) for a binding; testcontainers' with_bind_ports
    # would publish on every interface.
    for inside, outside in spec.ports.items():
        container.ports[f"{inside}/tcp"] = (LOOPBACK, outside)
    return container


@contextmanager
def kafka_container(spec: ContainerSpec) -> Iterator[str]:
    """compose's Kafka as a container; yields its bootstrap. Removed once, on the way out."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = DockerContainer(spec.image, env=spec.env, hostname=spec.hostname)
    container.waiting_for(LogMessageWaitStrategy(re.compile(r"Kafka Server started")).with_startup_timeout(120))
    with _on_loopback(container, spec):
        yield kafka_bootstrap(spec)


@contextmanager
def postgres_container(spec: ContainerSpec) -> Iterator[str]:
    """compose's PostgreSQL as a container; yields its URL once psql answers in it."""
    from testcontainers.community.postgres import PostgresContainer

    env = spec.env
    container = PostgresContainer(
        spec.image, username=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"], dbname=env["POSTGRES_DB"]
    )
    (inside,) = spec.ports
    container.port = inside
    with _on_loopback(container, spec):
        yield postgres_url(spec)
