"""Kafka's own command-line tools, run from the pinned jars: the answers operators trust,
and what the tests compare rentalstream's figures with."""

from __future__ import annotations

from rentalstream.kafka_server import KafkaRuntime

CONSUMER_GROUPS_TOOL = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def describe_consumer_groups(runtime: KafkaRuntime, bootstrap: str, *groups: str) -> str:
    """What Kafka's own consumer-groups tool (kafka-consumer-groups.sh) says of ``groups``:
    per partition, the committed offset, the log end offset and the lag."""
    arguments = ["--bootstrap-server", bootstrap, "--describe"]
    for group in groups:
        arguments += ["--group", group]
    tool = runtime.run_tool(CONSUMER_GROUPS_TOOL, *arguments)
    if tool.returncode != 0:
        raise RuntimeError(f"kafka-consumer-groups failed ({tool.returncode}):\n{tool.stderr or tool.stdout}")
    return tool.stdout


def parse_group_table(output: str) -> list[dict[str, str]]:
    """The rows of the tool's table, by column (GROUP, TOPIC, PARTITION, CURRENT-OFFSET,
    LOG-END-OFFSET, LAG, ...); "-" where the tool has no value."""
    rows, header = [], None
    for line in output.splitlines():
        cells = line.split()
        if not cells:
            continue
        if cells[0] == "GROUP":
            header = cells
        elif header is not None and len(cells) == len(header) and cells[header.index("PARTITION")].isdigit():
            rows.append(dict(zip(header, cells, strict=True)))
    return rows
