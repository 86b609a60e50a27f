"""What the handler tests put in place of Kafka: FastStream's in-memory test broker, results
published on it, and subscribers that collect what arrives."""

from faststream.kafka import KafkaBroker


class ThroughTheTestBroker:
    """Results published on the in-memory broker: the scorer's delivery (``deliver``: then the
    batch is acknowledged, as runtime.kafka.delivery does on Kafka) and the monitor's
    publisher (``publish``)."""

    guarantee = "in-memory"

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker
        self.committed: dict = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def publish(self, messages) -> None:
        """(topic, key, model) or (topic, key, model, headers) messages, as ``BatchPublisher`` takes them."""
        for topic, key, model, *headers in messages:
            await self.broker.publish(
                model.model_dump_json().encode(),
                topic,
                key=key.encode() if key else None,
                headers={name: value.decode() for name, value in headers[0]} if headers else None,
            )

    async def deliver(self, messages, records, message, replies=()) -> None:
        await self.publish([*replies, *messages])
        await message.ack()

    async def rewind(self, records, message) -> None:
        await message.nack()

    async def settle(self) -> None:
        pass

    def forget_rewinds(self) -> None:
        pass


def collect(broker: KafkaBroker, *topics: str) -> dict[str, list[dict]]:
    """Subscribe to ``topics`` on ``broker``; the messages that arrive on each, decoded."""
    arrived: dict[str, list[dict]] = {topic: [] for topic in topics}
    for topic, seen in arrived.items():
        broker.subscriber(topic)(_appender(seen))
    return arrived


def _appender(seen: list[dict]):
    async def append(body: dict) -> None:  # FastStream decodes the JSON
        seen.append(body)

    return append
