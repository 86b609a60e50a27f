"""The stack every benchmark runs on: fresh, embedded, in a temporary home, with a
trained champion and only the services the benchmark measures, on free ports.

``BROKERS`` are the Kafka set-ups a benchmark can run on (``--broker``): the embedded
stack's one Apache Kafka node, or a cluster of three (topics with three replicas and
min.insync.replicas=2, so every write is acknowledged by two nodes), as the
broker-fault tests run it."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from producers.replay import publish_events
from rentalstream import kafka_server, processes, services, stack
from rentalstream.demo import wait_until_scored
from runtime.settings import Settings
from schemas.events import RentalEvent, utc_now

BROKERS = {
    "kafka": "one Apache Kafka node (broker and controller), as `rentalstream up` starts it",
    "kafka-3": "three Apache Kafka nodes, topics with 3 replicas, min.insync.replicas=2, acks=all",
}


def add_broker_option(parser) -> None:
    parser.add_argument(
        "--broker",
        choices=sorted(BROKERS),
        default="kafka",
        help="; ".join(f"{name}: {what}" for name, what in BROKERS.items()),
    )


@contextmanager
def fresh_stack(
    wanted: tuple[services.Service, ...] = (), keep_home: bool = False, broker: str = "kafka"
) -> Iterator[tuple[Settings, dict]]:
    """(settings, stack state with the started services' pids and URLs); everything is
    stopped, and the home removed unless ``keep_home``, on the way out."""
    home = Path(tempfile.mkdtemp(prefix="rentalstream-bench-"))
    os.environ.setdefault("RENTALSTREAM_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    os.environ.update({"RENTALSTREAM_HOME": str(home), "RENTALSTREAM_LOG_LEVEL": "WARNING"})
    for service in services.ALL:
        os.environ[service.port_variable] = str(processes.free_port())
    cluster = None
    if broker == "kafka-3":  # started here; the stack then uses it as an external Kafka
        settings = Settings()
        runtime = kafka_server.kafka_runtime(settings.kafka.cache_dir, settings.kafka.java, settings.kafka.heap)
        cluster = kafka_server.start_cluster(home / "kafka-cluster", runtime, nodes=3)
        os.environ["RENTALSTREAM_KAFKA_BOOTSTRAP"] = cluster.bootstrap
        os.environ["RENTALSTREAM_KAFKA_TOPIC_REPLICATION_FACTOR"] = str(cluster.replication_factor)
    settings = Settings()
    try:
        print(
            f"starting a fresh stack in {home}, the champion (trained if missing) and "
            f"{', '.join(s.name for s in wanted) or 'no service'}...",
            flush=True,
        )
        stack.up_with_services(settings, wanted)
        state = settings.stack.model_dump(mode="json")  # a snapshot: the benchmarks add to it
        if cluster is not None:  # its nodes' CPU is counted like the embedded broker's
            state.setdefault("pids", {}).update({f"broker {n.node_id}": n.pid for n in cluster.nodes})
        yield settings, state
    finally:
        stack.down(settings)
        if cluster is not None:
            cluster.stop()
            for name in ("RENTALSTREAM_KAFKA_BOOTSTRAP", "RENTALSTREAM_KAFKA_TOPIC_REPLICATION_FACTOR"):
                os.environ.pop(name, None)
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)


def warm_up(settings: Settings, event: RentalEvent, scorer_pid: int, scorer_urls: list[str]) -> None:
    """One rental through the scorer (its consumer groups joined, its model loaded), then
    wait until every scorer in ``scorer_urls`` prices with the compiled trees."""
    since = utc_now()
    asyncio.run(publish_events(settings.resolved_kafka_bootstrap(), [event]))
    wait_until_scored(settings, since, 1, scorer_pid)
    for url in scorer_urls:
        wait_until_compiled(url)


def wait_until_compiled(scorer_url: str, timeout: float = 300) -> None:
    """Wait until the scorer prices with the compiled trees (the first time a model is
    seen on a machine its compilation takes ~30 s of one core, which would share the run)."""
    print("waiting for the scorer to switch to the compiled trees...", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric_totals(scorer_url).get("rentalstream_model_compiled") == 1:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the scorer did not switch to the compiled trees within {timeout:.0f} s")


def metric_totals(service_url: str) -> dict[str, float]:
    """Each Prometheus sample name of a service's /metrics, summed over its labels."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{service_url}/metrics", timeout=5).text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def stack_processes(state: dict) -> dict[str, int]:
    """Name → pid of the broker, PostgreSQL, MLflow and every started service."""
    return {**state["pids"], **{name: service["pid"] for name, service in state["services"].items()}}


def cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    """User + system CPU of each process with its children (PostgreSQL has a backend
    per connection; MLflow its workers), except for this process, whose children are
    the services measured on their own."""
    totals = {}
    for name, pid in processes.items():
        try:
            parent = psutil.Process(pid)
            family = [parent] if pid == os.getpid() else [parent, *parent.children(recursive=True)]
            totals[name] = sum(t.user + t.system for t in (p.cpu_times() for p in family))
        except psutil.NoSuchProcess:
            totals[name] = 0.0
    return totals


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


class PeakRss:
    """Samples the resident memory of some processes every 50 ms in a background thread:
    ``peak`` of each process, ``children_peak`` of its children's sum (the scorer's and
    the bridge's registry process, a compilation)."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in processes.items()}
        self.peak = {name: p.memory_info().rss for name, p in self.processes.items()}
        self.children_peak = dict.fromkeys(self.processes, 0)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            for name, process in self.processes.items():
                try:
                    self.peak[name] = max(self.peak[name], process.memory_info().rss)
                    children = sum(_rss(child) for child in process.children(recursive=True))
                    self.children_peak[name] = max(self.children_peak[name], children)
                except psutil.NoSuchProcess:
                    pass

    def stop(self) -> dict[str, int]:
        self._done.set()
        self._thread.join()
        return self.peak
