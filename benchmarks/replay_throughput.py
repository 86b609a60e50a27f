"""Replay throughput: the whole delay history through broker → scorer → Postgres.

    python benchmarks/replay_throughput.py [--broker kafka|kafka-3] [--scorer-only] [--scorers N] [--limit N]
                                           [--traces | --traces-overhead] [--profile PATH] [--keep-home]

Starts a fresh embedded stack in a temporary home (``bench_stack.fresh_stack``), trains
the champion and starts the scorer, monitor, bridge and dashboard (``--scorer-only``:
the scorer alone), as `rentalstream up` does. It waits until one warm-up event is
stored (consumer groups assigned, model loaded) and the scorer prices with the
compiled trees, then replays the history as fast as possible and prints:

- events/s published (replay start → last ack),
- events/s scored and committed (first publish → last row committed),
- time from the last event published to the last row committed,
- p50/p99 event-to-commit latency (event time set at send; commit time from
  PostgreSQL's clock_timestamp(); same machine, same clock),
- peak RSS of every service and of its children (the registry process, a compilation),
  the CPU seconds every process used meanwhile, and the scorers' CPU time per rental,

with the conditions (CPU count, partitions, batch size, dataset rows). ``--profile``
attaches py-spy to the scorer for the replay and writes its collapsed stacks.

``--traces`` keeps traces: the services and the replay export their spans over OTLP/HTTP
(``OTEL_EXPORTER_OTLP_ENDPOINT``) to a sink on 127.0.0.1 (``otlp_sink.py``), whose CPU is
reported apart. ``--traces-overhead`` runs the benchmark without and with ``--traces``,
``--rounds`` times each, alternately, and prints the figures side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import psutil
from against import REPO, parse_or_compare, run_variants
from bench_stack import (
    BROKERS,
    PeakRss,
    add_broker_option,
    cpu_seconds,
    fresh_stack,
    stack_processes,
    warm_up,
)
from opentelemetry import trace
from sqlalchemy import create_engine, text

from producers.replay import publish_events, rental_events
from rentalstream import processes, services
from rentalstream.demo import wait_until_scored
from rentalstream.kafka_jars import kafka_version
from runtime import tracing
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from runtime.settings import Settings, normalised_database_url
from schemas.events import utc_now

LATENCY_SQL = text("""
    SELECT count(*) AS n,
           max(stored_at) AS last_commit,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - event_time)) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - event_time)) AS p99
    FROM rentals WHERE event_time >= :since
""")
# The lines that carry the figures, for --against's side-by-side summary.
FIGURES = r"^(published|scored|last publish|event-to-commit|peak RSS|conditions|CPU|scorer CPU)"
SERVICES = (services.SCORER, services.MONITOR, services.BRIDGE, services.DASHBOARD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scorer-only", action="store_true", help="start the scorer and no other service")
    parser.add_argument("--scorers", type=int, default=1, help="scorer replicas in the consumer group (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N rows")
    parser.add_argument(
        "--profile", metavar="PATH", help="py-spy the scorer during the replay; collapsed stacks to PATH"
    )
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary stack folder")
    parser.add_argument("--traces", action="store_true", help="export every service's spans to an OTLP sink")
    parser.add_argument(
        "--traces-overhead", action="store_true", help="run without and with --traces, alternately (--rounds each)"
    )
    add_broker_option(parser)
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return
    if args.traces_overhead:
        argv = [a for a in sys.argv[1:] if a != "--traces-overhead"]
        run_variants([("traces off", REPO, argv), ("traces on", REPO, [*argv, "--traces"])], args.rounds, FIGURES)
        return
    with otlp_sink() if args.traces else nullcontext() as sink:
        replay(args)
    if sink is not None:
        print(f"traces: {sink.summary()}")


def replay(args: argparse.Namespace) -> None:

    wanted = (services.SCORER,) if args.scorer_only else SERVICES
    with (
        fresh_stack(wanted, keep_home=args.keep_home, broker=args.broker) as (settings, state),
        replicas(settings, args.scorers - 1) as extra,
    ):
        state["services"].update(extra)
        scorer_pid = state["services"]["scorer"]["pid"]
        events = rental_events(
            dataset_path(DELAYS_XLSX, settings.data_dir),
            dataset_path(PRICING_CSV, settings.data_dir),
            limit=args.limit,
        )
        engine = create_engine(normalised_database_url(settings.resolved_database_url()))
        bootstrap = settings.resolved_kafka_bootstrap()

        scorers = [service["url"] for name, service in state["services"].items() if name.startswith("scorer")]
        warm_up(settings, events[0], scorer_pid, scorers)
        time.sleep(2)  # let the services settle after the warm-up

        processes = stack_processes(state) | {"replay (this process)": os.getpid()}
        peak_rss = PeakRss({name: state["services"][name]["pid"] for name in state["services"]})
        profiler = (
            subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(scorer_pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--output",
                    args.profile,
                ]
            )
            if args.profile
            else None
        )
        if args.traces:
            tracing.configure("rentalstream-replay")  # as `rentalstream replay` does
        cpu_before = cpu_seconds(processes)
        since = utc_now()
        started = time.time()
        stats = asyncio.run(publish_events(bootstrap, events, batch_size=settings.replay.batch_size))
        last_published = started + stats.seconds
        wait_until_scored(settings, since, len(events), scorer_pid)
        if args.traces:  # the replay's last spans, while the sink still listens
            trace.get_tracer_provider().force_flush()
        cpu_used = {name: after - cpu_before[name] for name, after in cpu_seconds(processes).items()}
        with engine.connect() as conn:
            row = conn.execute(LATENCY_SQL, {"since": since}).one()
        peaks = peak_rss.stop()
        if profiler:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        engine.dispose()

        last_commit = row.last_commit.timestamp()
        print(
            f"broker: {BROKERS[args.broker]} (Apache Kafka {kafka_version()}); the scorer's results in Kafka "
            f"transactions ({settings.kafka.transactions}); traces {'exported over OTLP' if args.traces else 'off'}"
        )
        print(
            f"conditions: {len(events):,} rentals replayed as fast as possible; {os.cpu_count()} CPU cores shared "
            f"by the broker, PostgreSQL, MLflow, the replay and {', '.join(state['services'])}; "
            f"{settings.kafka.topic_partitions} partitions; {args.scorers} scorer replica(s), batches of up to "
            f"{settings.scorer.max_records}; "
            f"model compiled (lleaves)"
        )
        print(f"published:                  {stats.events_per_second:>8,.0f} events/s ({stats.seconds:.2f} s)")
        print(
            f"scored and committed:       {len(events) / (last_commit - started):>8,.0f} events/s "
            f"({last_commit - started:.2f} s from first publish to last commit)"
        )
        print(f"last publish → last commit: {last_commit - last_published:>8.2f} s")
        print(f"event-to-commit latency:    p50 {row.p50 * 1000:,.0f} ms, p99 {row.p99 * 1000:,.0f} ms")
        print("peak RSS:                   " + ", ".join(f"{n} {b / 2**20:,.0f} MiB" for n, b in peaks.items()))
        children = ", ".join(f"{n} {b / 2**20:,.0f} MiB" for n, b in peak_rss.children_peak.items())
        print(f"peak RSS of their children: {children}")
        print(
            "CPU seconds meanwhile:      "
            + ", ".join(f"{n} {s:.2f}" for n, s in sorted(cpu_used.items(), key=lambda i: -i[1]) if s >= 0.005)
        )
        scorers_cpu = sum(s for n, s in cpu_used.items() if n.startswith("scorer"))
        # Steadier than the rate, which the machine's other load moves by ±20%.
        print(f"scorer CPU per rental:      {scorers_cpu / len(events) * 1e6:>8.1f} µs")


class OtlpSink:
    def __init__(self, process: subprocess.Popen) -> None:
        self.process, self.cpu_seconds, self.output = process, 0.0, ""

    def summary(self) -> str:
        return f"{self.output.strip()}; the sink's CPU {self.cpu_seconds:.2f} s (not counted above)"


@contextmanager
def otlp_sink() -> Iterator[OtlpSink]:
    """``otlp_sink.py`` on a free port, named by ``OTEL_EXPORTER_OTLP_ENDPOINT`` for every
    process started meanwhile; stopped (SIGTERM) on the way out."""
    port = processes.free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("otlp_sink.py")), str(port)], stdout=subprocess.PIPE, text=True
    )
    sink = OtlpSink(process)
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    try:
        processes.wait_for_port("127.0.0.1", port, timeout=30, process=process)
        yield sink
        sink.cpu_seconds = sum(psutil.Process(process.pid).cpu_times()[:2])
    finally:
        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        process.terminate()
        sink.output, _ = process.communicate(timeout=30)


@contextmanager
def replicas(settings: Settings, count: int) -> Iterator[dict[str, dict]]:
    """``count`` more scorer processes in the same consumer group, each on its own port,
    ready (holding partitions); stopped (SIGTERM) on the way out."""
    started: dict[str, dict] = {}
    try:
        for index in range(2, count + 2):
            name = f"scorer-{index}"
            started[name] = services.spawn(
                settings, services.SCORER, instance=name, port=processes.free_port()
            ).model_dump()
        for name, service in started.items():
            services.wait_ready(name, f"{service['url']}/ready", service["pid"], time.monotonic() + 180, service["log"])
        yield started
    finally:
        for service in started.values():
            processes.stop_pid(service["pid"], timeout=30)


if __name__ == "__main__":
    main()
