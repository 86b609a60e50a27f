"""How our Kafka clients prove who they are and check whom they speak to.

From the settings, one FastStream security object (``faststream.security``): the scorer's
and the monitor's FastStream brokers take it as it is, and every aiokafka client we make
(producers, consumers, admin clients) takes the keyword arguments FastStream's own
parser makes of it, so that every client of a process speaks alike.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLScram256, SASLScram512

from runtime.settings import KafkaSettings

SCRAM = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256}


def broker_security(kafka: KafkaSettings) -> BaseSecurity | None:
    """FastStream's security of ``kafka``'s settings; None for PLAINTEXT."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    try:
        context = ssl.create_default_context(cafile=str(kafka.ca_file) if kafka.ca_file else None)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"RENTALSTREAM_KAFKA_CA_FILE: cannot read CAs from {kafka.ca_file}: {error}") from None
    return SCRAM[kafka.sasl_mechanism](
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value(),
        ssl_context=context,
    )


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka's keyword arguments for ``kafka``'s settings (empty for PLAINTEXT)."""
    return parse_security(broker_security(kafka))
