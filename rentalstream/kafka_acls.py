"""The Kafka ACLs each of our services needs on a secured cluster, and no more.

With ``authorizer.class.name`` set, a principal other than a super user may do only what
an ACL allows it. Each service logs in as its own principal, a SCRAM user named
``rentalstream-<service>`` (made by the cluster's operator: ``kafka-storage format
--add-scram`` or ``kafka-configs --alter --add-config 'SCRAM-SHA-512=[…]'``), and
``rentalstream init --kafka-acls`` (as a super user) grants each the rules below:

- the producer (``replay``, ``simulate``) writes ``rentals`` (and the simulator
  ``price-requests``);
- the scorer reads its inputs and writes its results, in transactions;
- the monitor reads what it watches and writes ``drift`` and its dead letters;
- the bridge writes price requests and reads the replies (assigned, no group);
- the dashboard reads the result topics.

Consumer groups and transactional ids carry an instance suffix, so they are granted by
prefix; topics by their exact name. Granting is idempotent: Kafka keeps one binding for a
rule created twice.

aiokafka's admin client has no ACL call (Kafka's own ``kafka-acls.sh`` is a JVM start per
rule), so the rules go out as aiokafka's ``CreateAclsRequest``, one per binding, on a
connection made like every other client of ours (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from aiokafka import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from runtime.settings import Settings
from schemas.topics import DEAD_LETTERS, DELAYS, DRIFT, PRICE_REPLIES, PRICE_REQUESTS, PRICES, RENTALS
from scorer.app import CLIENT_ID as SCORER_CLIENT_ID

SERVICES = ("producer", "scorer", "monitor", "bridge", "dashboard")


# Kafka's protocol codes (org.apache.kafka.common.acl and .resource).
class Resource(IntEnum):
    TOPIC = 2
    GROUP = 3
    TRANSACTIONAL_ID = 5


class Operation(IntEnum):
    READ = 3
    WRITE = 4


LITERAL, PREFIXED, ALLOW, ANY_HOST = 3, 4, 3, "*"


@dataclass(frozen=True)
class Rule:
    operation: Operation
    resource: Resource
    name: str
    prefixed: bool = False

    def __str__(self) -> str:
        pattern = "prefix " if self.prefixed else ""
        return f"{self.operation.name} {self.resource.name.lower()} {pattern}{self.name}"


def principal(service: str) -> str:
    """The user a service logs in as on a secured cluster (its SCRAM login)."""
    return f"rentalstream-{service}"


def _topics(operation: Operation, *topics) -> list[Rule]:
    return [Rule(operation, Resource.TOPIC, topic.name) for topic in topics]


def rules(settings: Settings) -> dict[str, list[Rule]]:
    """Each service's rules, with the group ids of ``settings``."""
    read, write = Operation.READ, Operation.WRITE
    return {
        "producer": _topics(write, RENTALS, PRICE_REQUESTS),  # the simulator sends price requests too
        "scorer": [
            *_topics(read, RENTALS, PRICE_REQUESTS),
            *_topics(write, PRICES, DELAYS, PRICE_REPLIES, DEAD_LETTERS),
            Rule(read, Resource.GROUP, settings.scorer.group_id, prefixed=True),
            Rule(write, Resource.TRANSACTIONAL_ID, SCORER_CLIENT_ID, prefixed=True),
        ],
        "monitor": [
            *_topics(read, RENTALS, PRICES, DELAYS),
            *_topics(write, DRIFT, DEAD_LETTERS),
            Rule(read, Resource.GROUP, settings.monitor.group_id, prefixed=True),
        ],
        "bridge": [*_topics(write, PRICE_REQUESTS), *_topics(read, PRICE_REPLIES)],
        "dashboard": [
            *_topics(read, PRICES, DELAYS, DRIFT, DEAD_LETTERS),
            Rule(read, Resource.GROUP, settings.dashboard.group_id, prefixed=True),
        ],
    }


async def grant(settings: Settings, security: dict) -> dict[str, list[Rule]]:
    """Create every service's rules on ``settings``' cluster, logged in with ``security``
    (a super user's); return them by principal. Raises on the first rule refused."""
    granted = {principal(service): service_rules for service, service_rules in rules(settings).items()}
    client = AIOKafkaClient(
        bootstrap_servers=settings.resolved_kafka_bootstrap(), request_timeout_ms=10_000, **security
    )
    try:
        await client.bootstrap()  # after `init` created the topics: the broker is up
        node = client.get_random_node()
        for user, user_rules in granted.items():
            for rule in user_rules:
                request = CreateAclsRequest(
                    rule.resource,
                    rule.name,
                    PREFIXED if rule.prefixed else LITERAL,
                    f"User:{user}",
                    ANY_HOST,
                    rule.operation,
                    ALLOW,
                )
                response = await client.send(node, request)
                for error_code, message in response.creation_responses:
                    if error_code:
                        raise for_code(error_code)(f"granting {user} {rule}: {message or ''}".rstrip(": "))
    finally:
        await client.close()
    return granted
