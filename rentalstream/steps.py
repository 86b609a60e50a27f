"""Steps both the CLI and the demo take: replay the xlsx with a progress bar, show the stack."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from runtime.settings import Settings, redact_url
from runtime.stack_state import StackState


def run_replay(settings: Settings, *, rate: float | None, limit: int | None):
    """Publish the xlsx's rentals (priced cars joined in) with a progress bar."""
    from producers.replay import publish_events, rental_events
    from runtime import tracing
    from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
    from runtime.kafka.security import client_options

    tracing.configure("rentalstream-replay")
    events = rental_events(
        dataset_path(DELAYS_XLSX, settings.data_dir),
        dataset_path(PRICING_CSV, settings.data_dir),
        limit=limit,
    )
    with tqdm(total=len(events), unit="ev", desc="replay") as bar:
        return asyncio.run(
            publish_events(
                settings.resolved_kafka_bootstrap(),
                events,
                rate=rate,
                batch_size=settings.replay.batch_size,
                on_progress=bar.update,
                security=client_options(settings.kafka),
            )
        )


def print_stack(console: Console, settings: Settings, topics: dict[str, int]) -> None:
    """Where each piece of the stack answers, and where its log is."""
    table = Table(title="rentalstream stack")
    table.add_column("piece")
    table.add_column("endpoint")
    state = settings.stack or StackState()
    embedded = f" (Apache Kafka {state.kafka.version}, log in {state.kafka.folder})" if state.kafka else ""
    table.add_row("kafka", settings.resolved_kafka_bootstrap() + embedded)
    table.add_row("postgres", redact_url(settings.resolved_database_url()))
    table.add_row("mlflow", settings.resolved_mlflow_tracking_uri())
    table.add_row("topics", ", ".join(f"{t} ({n})" for t, n in topics.items()))
    for name, service in state.services.items():
        where = {"bridge": f"{service.url}/docs", "dashboard": f"{service.url}/"}.get(name, f"{service.url}/metrics")
        table.add_row(name, f"{where} (pid {service.pid}, log {service.log})")
    console.print(table)
