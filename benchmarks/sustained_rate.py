"""Sustained rate: a steady simulated stream for a minute, event-to-commit latency and backlog.

    python benchmarks/sustained_rate.py [--rate 5000] [--seconds 60] [--scorer-only]

Starts a fresh embedded stack in a temporary home with the scorer, monitor, bridge and
dashboard (``--scorer-only``: the scorer alone), waits until the scorer prices with the
compiled trees, then publishes the simulator's stream (rentals and 20% price requests,
``rentalstream simulate``'s events, generated beforehand so generating them costs
nothing during the run) at ``--rate`` events/s for ``--seconds``. It prints:

- the rate reached and every 10 s window: events published, events committed,
  event-to-commit latency p50/p99 (rentals and price requests, stored_at − event time,
  both on this machine's clock);
- the backlog (events published and acknowledged but not yet committed), sampled every
  second: first, largest, last, and its trend over the run;
- peak RSS and CPU seconds of every process.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import threading
import time

from against import parse_or_compare
from bench_stack import PeakRss, cpu_seconds, fresh_stack, metric_totals, stack_processes, wait_until_compiled
from sqlalchemy import create_engine, text

from producers.publishing import publish_paced
from producers.simulator import Simulator
from rentalstream import services
from runtime.settings import normalised_database_url
from schemas.events import utc_now

LATENCIES_SQL = text("""
    SELECT extract(epoch FROM event_time - :since) AS at, extract(epoch FROM stored_at - event_time) AS latency
    FROM rentals WHERE event_time >= :since
    UNION ALL
    SELECT extract(epoch FROM requested_at - :since), extract(epoch FROM stored_at - requested_at)
    FROM price_requests WHERE requested_at >= :since
""")
SERVICES = (services.SCORER, services.MONITOR, services.BRIDGE, services.DASHBOARD)
WINDOW = 10


FIGURES = r"^(conditions|published|\s+window|\s*\d+-\s*\d+\s+s|\s+all|backlog)"  # the lines --against sets side by side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000, help="events per second (default 5000)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the run (default 60)")
    parser.add_argument("--scorer-only", action="store_true", help="start the scorer and no other service")
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return

    wanted = (services.SCORER,) if args.scorer_only else SERVICES
    with fresh_stack(wanted) as (settings, state):
        wait_until_compiled(state["services"]["scorer"]["url"])
        total = int(args.rate * args.seconds)
        print(f"generating {total:,} simulated events...", flush=True)
        simulator = Simulator.from_data_dir(
            settings.data_dir, price_request_share=settings.simulator.price_request_share, run_id="sustained"
        )
        events = list(itertools.islice(simulator.events(), total))
        engine = create_engine(normalised_database_url(settings.resolved_database_url()))
        processes = stack_processes(state) | {"publisher (this process)": os.getpid()}
        peak_rss = PeakRss({name: service["pid"] for name, service in state["services"].items()})
        acknowledged = [0]
        backlog = Backlog(state["services"]["scorer"]["url"], acknowledged, processes)

        cpu_before = cpu_seconds(processes)
        since = utc_now()
        backlog.start()
        print(f"publishing at {args.rate:,.0f} events/s for {args.seconds:g} s...", flush=True)
        stats = asyncio.run(
            publish_paced(
                settings.resolved_kafka_bootstrap(),
                events,
                rate=args.rate,
                on_progress=lambda n: acknowledged.__setitem__(0, acknowledged[0] + n),
                client_id="rentalstream-bench",
            )
        )
        deadline = time.monotonic() + 60
        while backlog.committed() < stats.published and time.monotonic() < deadline:
            time.sleep(0.1)
        drained = time.monotonic()
        backlog.stop()
        cpu_used = {name: after - cpu_before[name] for name, after in cpu_seconds(processes).items()}
        peaks = peak_rss.stop()
        with engine.connect() as conn:
            latencies = conn.execute(LATENCIES_SQL, {"since": since}).all()
        engine.dispose()

        print(
            f"\nconditions: the simulator's stream (rentals and {settings.simulator.price_request_share:.0%} price "
            f"requests) at {args.rate:,.0f} events/s for {args.seconds:g} s; {os.cpu_count()} CPU cores shared by the "
            f"broker, PostgreSQL, MLflow, the publisher and {', '.join(state['services'])}; "
            f"{settings.kafka.topic_partitions} partitions; scorer batches of up to {settings.scorer.max_records}, "
            f"batch wait {settings.scorer.batch_timeout_ms} ms; model compiled (lleaves)"
        )
        print(
            f"published: {stats.published:,} events in {stats.seconds:.1f} s = {stats.events_per_second:,.0f}/s; "
            f"committed: {len(latencies):,}; last committed {drained - backlog.started - stats.seconds:.2f} s "
            "after the last publish"
        )
        shown = ["broker", "postgres", *state["services"]]
        print(
            f"\n{'window':>10}{'committed':>11}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}   cores used: "
            + ", ".join(shown)
        )
        for start in range(0, int(args.seconds), WINDOW):
            window = sorted(lat for at, lat in latencies if start <= at < start + WINDOW)
            if window:
                cores = "  ".join(f"{backlog.cores(n, start, start + WINDOW):.2f}" for n in shown)
                print(
                    f"{start:>4}-{start + WINDOW:<3} s{len(window):>11,}{len(window) / WINDOW:>8,.0f}"
                    f"{quantile(window, 0.5):>9,.0f}{quantile(window, 0.99):>9,.0f}{window[-1] * 1000:>9,.0f}   {cores}"
                )
        overall = sorted(lat for _, lat in latencies)
        print(
            f"{'all':>10}{len(overall):>11,}{'':>8}{quantile(overall, 0.5):>9,.0f}"
            f"{quantile(overall, 0.99):>9,.0f}{overall[-1] * 1000:>9,.0f}"
        )
        print(f"\nbacklog (published, not yet committed), sampled every second: {backlog.describe()}")
        print("peak RSS:              " + ", ".join(f"{n} {b / 2**20:,.0f} MiB" for n, b in peaks.items()))
        print(
            "CPU seconds meanwhile: "
            + ", ".join(f"{n} {s:.1f}" for n, s in sorted(cpu_used.items(), key=lambda i: -i[1]) if s >= 0.05)
        )


def quantile(ordered: list[float], q: float) -> float:
    """In ms, nearest rank."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Backlog:
    """Every second: events acknowledged by the broker minus events the scorer has
    committed to Postgres (its counters of events scored and dead-lettered; counting rows
    in Postgres every second would itself load the database more and more)."""

    def __init__(self, scorer_url: str, acknowledged: list[int], processes: dict[str, int]) -> None:
        self.scorer_url = scorer_url
        self.acknowledged = acknowledged
        self.processes = processes
        self.samples: list[int] = []
        self.cpu: list[dict[str, float]] = []  # each process's CPU seconds at each sample
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self.baseline = self._counted()
        self.started = time.monotonic()
        self._thread.start()

    def committed(self) -> int:
        return self._counted() - self.baseline

    def _counted(self) -> int:
        totals = metric_totals(self.scorer_url)
        return int(totals.get("rentalstream_events_scored_total", 0) + totals.get("rentalstream_dead_letters_total", 0))

    def _sample(self) -> None:
        self.cpu.append(cpu_seconds(self.processes))
        while not self._done.wait(1.0):
            published = self.acknowledged[0]
            self.samples.append(max(0, published - self.committed()))
            self.cpu.append(cpu_seconds(self.processes))

    def cores(self, name: str, start: int, end: int) -> float:
        """Cores ``name`` used on average between second ``start`` and ``end`` of the run."""
        end = min(end, len(self.cpu) - 1)
        return (self.cpu[end][name] - self.cpu[start][name]) / (end - start) if end > start else float("nan")

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def describe(self) -> str:
        samples = self.samples
        if len(samples) < 4:
            return f"{samples}"
        half = len(samples) // 2
        first, second = statistics.fmean(samples[:half]), statistics.fmean(samples[half:])
        return (
            f"{len(samples)} samples, first {samples[0]:,}, largest {max(samples):,}, last {samples[-1]:,}; "
            f"mean {first:,.0f} over the first half, {second:,.0f} over the second"
        )


if __name__ == "__main__":
    main()
