"""What each part of the stack costs while nothing happens: CPU over idle seconds.

    python benchmarks/idle_cost.py [--seconds 60] [--settle 20] [--broker kafka|kafka-3]

Starts a fresh embedded stack with every service (scorer, monitor, bridge, dashboard),
waits until they are ready, the scorer prices with the compiled trees and one event has
gone through, lets everything settle, then publishes nothing for ``--seconds`` and
prints each process's CPU over that time as a share of one core. Nothing reads
``/metrics`` or opens the dashboard meanwhile: the figure is what an unwatched,
unused stack costs. The target is at most 1% of a core per service.
"""

from __future__ import annotations

import argparse
import os
import time

from against import parse_or_compare
from bench_stack import add_broker_option, cpu_seconds, fresh_stack, stack_processes, warm_up

from producers.replay import rental_events
from rentalstream import services
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path

FIGURES = r"^(idle |conditions)"
SERVICES = (services.SCORER, services.MONITOR, services.BRIDGE, services.DASHBOARD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="idle seconds measured (default 60)")
    parser.add_argument("--settle", type=float, default=20, help="seconds to wait before measuring (default 20)")
    add_broker_option(parser)
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return

    with fresh_stack(SERVICES, broker=args.broker) as (settings, state):
        scorer = state["services"]["scorer"]
        events = rental_events(
            dataset_path(DELAYS_XLSX, settings.data_dir), dataset_path(PRICING_CSV, settings.data_dir), limit=1
        )
        warm_up(settings, events[0], scorer["pid"], [scorer["url"]])
        time.sleep(args.settle)

        processes = stack_processes(state)
        before = cpu_seconds(processes)
        time.sleep(args.seconds)
        used = {name: after - before[name] for name, after in cpu_seconds(processes).items()}

        print(
            f"conditions: {args.seconds:.0f} idle s after {args.settle:.0f} s of settling; {os.cpu_count()} CPU "
            f"cores; {settings.kafka.topic_partitions} partitions; every service started as `rentalstream up` does"
        )
        for name, seconds in sorted(used.items(), key=lambda item: -item[1]):
            print(f"idle {name:<12} {100 * seconds / args.seconds:>6.2f}% of a core ({seconds:.2f} CPU-s)")


if __name__ == "__main__":
    main()
