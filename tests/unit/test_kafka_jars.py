"""The embedded Kafka's jars: the lock agrees with the pom and with compose's image, and a
download is kept only when its digest is the one the lock pins. Also the cluster id's
form and Kafka's consumer-groups table as the tool prints it."""

import hashlib
import threading
import xml.etree.ElementTree as ET
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rentalstream.kafka_jars import POM, JarMismatch, ensure_jars, kafka_version, locked_jars
from rentalstream.kafka_server import new_cluster_id
from rentalstream.kafka_tools import parse_group_table
from tests.compose import SERVICES

MAVEN = "{http://maven.apache.org/POM/4.0.0}"
JARS = {"org.apache.kafka:kafka_2.13:9.9.9": b"the broker", "org.example:codec:1.0": b"a codec"}


def test_the_lock_pins_the_poms_kafka_and_compose_runs_the_same_version():
    pinned = kafka_version()
    assert ET.parse(POM).getroot().find(f"{MAVEN}properties/{MAVEN}kafka.version").text == pinned
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{pinned}"
    jars = locked_jars()
    assert {"kafka_2.13", "kafka-clients", "kafka-tools", "log4j-core", "slf4j-api"} <= {j.artifact for j in jars}
    assert "connect-runtime" not in {j.artifact for j in jars}  # excluded: the tools do not need it
    assert all(len(j.sha256) == 64 and j.size > 0 for j in jars)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def repository(tmp_path):
    """A Maven-layout repository on 127.0.0.1 serving JARS."""
    root = tmp_path / "repository"
    for coordinates, data in JARS.items():
        group, artifact, version = coordinates.split(":")
        path = root / group.replace(".", "/") / artifact / version / f"{artifact}-{version}.jar"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def lock_of(tmp_path, pinned: dict[str, bytes]):
    lock = tmp_path / "jars.lock"
    lines = [f"{c} {hashlib.sha256(data).hexdigest()} {len(data)}" for c, data in pinned.items()]
    lock.write_text("# coordinates  sha256  bytes\n" + "\n".join(lines) + "\n")
    return lock


def test_every_pinned_jar_is_fetched_checked_and_not_fetched_again(repository, tmp_path):
    lock = lock_of(tmp_path, JARS)
    arrived = []
    folder = ensure_jars(tmp_path / "cache", repository, on_progress=arrived.append, lock=lock)
    assert folder.name == "kafka-9.9.9"
    assert {j.coordinates for j in arrived} == set(JARS)
    assert (folder / "codec-1.0.jar").read_bytes() == b"a codec" and (folder / ".checked").exists()
    arrived.clear()
    assert ensure_jars(tmp_path / "cache", repository, on_progress=arrived.append, lock=lock) == folder
    assert arrived == []


def test_a_jar_whose_digest_differs_from_the_lock_is_refused_and_not_kept(repository, tmp_path):
    lock = lock_of(tmp_path, {**JARS, "org.example:codec:1.0": b"what the lock expects"})
    with pytest.raises(JarMismatch, match="codec-1.0.jar has SHA-256"):
        ensure_jars(tmp_path / "cache", repository, lock=lock)
    folder = tmp_path / "cache" / "kafka-9.9.9"
    assert not (folder / "codec-1.0.jar").exists() and not list(folder.glob("*.part"))
    assert not (folder / ".checked").exists()


def test_a_jar_the_repository_lacks_fails_at_once_and_nothing_is_marked_checked(repository, tmp_path):
    lock = lock_of(tmp_path, {**JARS, "org.example:missing:3.0": b"nowhere"})
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        ensure_jars(tmp_path / "cache", repository, lock=lock)
    assert not (tmp_path / "cache" / "kafka-9.9.9" / ".checked").exists()


def test_a_cluster_id_is_kafkas_base64_uuid():
    for _ in range(200):
        cluster_id = new_cluster_id()
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_the_consumer_groups_table_is_read_as_the_tool_prints_it():
    # As kafka-consumer-groups (Kafka 4.4) printed it for a group with no member left.
    output = """
GROUP           TOPIC           PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG             CONSUMER-ID     HOST            CLIENT-ID
g1              rentals         0          13              13              0               -               -               -
g1              rentals         1          11              20              9               -               -               -
"""
    rows = parse_group_table(output)
    assert [(r["PARTITION"], r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"]) for r in rows] == [
        ("0", "13", "13", "0"),
        ("1", "11", "20", "9"),
    ]
