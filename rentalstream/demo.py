"""`rentalstream demo`: the whole flow on one machine, with a summary at the end."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from rentalstream import processes, services, stack
from rentalstream.steps import print_stack, run_replay
from runtime.postgres.engines import read_rows
from runtime.settings import Settings, normalised_database_url, redact_url
from schemas.events import utc_now
from schemas.predict import EXAMPLE_CAR

SUMMARY = ("rentals", "ended", "late_returns", "with_previous_rental", "conflicts")  # of the dashboard's totals
SCORED_SINCE_SQL = text("SELECT count(*), max(stored_at) FROM rentals WHERE event_time >= :since")
DEAD_SINCE_SQL = text("SELECT count(*) FROM dead_letters WHERE received_at >= :since")


def run_demo(settings: Settings, console: Console, *, limit: int | None, wait: bool) -> None:
    started_stack = not stack.is_running(settings)
    started_services: list[str] = []
    try:
        prepared, started_services = stack.up_with_services(settings)
        print_stack(console, settings, prepared["topics"])
        running = settings.stack.services
        console.print(f"[bold]Open the dashboard now to watch the replay fill it: {running['dashboard'].url}/[/bold]")
        since = utc_now()
        stats = run_replay(settings, rate=None, limit=limit)
        last_published = time.time()
        scored, dead, last_commit = wait_until_scored(settings, since, stats.published, running["scorer"].pid)
        summary = summarise(settings)
        table = Table(title="demo summary")
        table.add_column("what")
        table.add_column("count", justify="right")
        for name, value in [
            ("events published", stats.published),
            ("events scored (rentals stored)", scored),
            ("dead letters", dead),
            *summary.items(),
        ]:
            table.add_row(name.replace("_", " "), f"{value:,}")
        console.print(table)
        console.print(
            f"replay: {stats.events_per_second:,.0f} events/s published; last row committed "
            f"{max(0.0, last_commit - last_published):.2f} s after the last event was published"
        )
        console.print(ask_the_bridge(running["bridge"].url))
        console.print(drift_line(settings, stats.published))
        console.print(min_gap_table(settings))
        console.print(query_help(settings))
        if wait:
            console.print("[bold]Everything is running. Press Ctrl-C to stop it.[/bold]")
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        if started_stack:
            stack.down(settings)
            console.print("stopped the services and the embedded stack (results stay in Postgres)")
        elif started_services:
            services.stop_services(settings, started_services)


def ask_the_bridge(url: str) -> str:
    """One real price through the HTTP bridge, and the command to ask for another."""
    body = json.dumps(EXAMPLE_CAR, ensure_ascii=False)
    started = time.perf_counter()
    response = httpx.post(f"{url}/predict", content=body.encode(), headers={"content-type": "application/json"})
    took = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return f"bridge: POST {url}/predict answered {response.status_code}: {response.text}"
    answer = response.json()
    return (
        f"bridge: POST {url}/predict priced a {EXAMPLE_CAR['model_key']} {EXAMPLE_CAR['car_type']} at "
        f"{answer['price_per_day']:.2f} €/day ({answer['model_name']} v{answer['model_version']}) in {took:.0f} ms.\n"
        f"  Try it: curl -s {url}/predict -H 'content-type: application/json' -d '{body}'\n"
        f"  API docs: {url}/docs"
    )


def drift_line(settings: Settings, replayed: int, timeout: float = 30) -> str:
    """What the drift monitor makes of the replay, once it has seen it (or after ``timeout``)."""
    from answers.drift_states import signal_states

    deadline = time.monotonic() + timeout
    while True:
        states = signal_states(settings.resolved_database_url())
        mileage = next((s["events_seen"] for s in states if s["signal"] == "rentals/mileage"), 0)
        if mileage >= replayed or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    drifting = [s["signal"] for s in states if s["state"] == "drifting"]
    return (
        f"drift monitor: {len(drifting)} of {len(states)} signals drifting after {mileage:,} rentals"
        + (f" ({', '.join(drifting)})" if drifting else "")
        + ".\n  See `rentalstream drift-report`; inject a shift with "
        "`rentalstream simulate --events 20000 --shift mileage=x2 --shift-from 5000` and look again."
    )


def min_gap_table(settings: Settings, thresholds: tuple[int, ...] = (60, 120)) -> Table:
    """The minimum-gap simulator's figures for a few thresholds, as the dashboard shows them."""
    from answers.min_gap import SCOPE_LABELS, SCOPES, GapGroup, outcome
    from answers.queries import GAP_GROUPS_SQL

    [rows] = read_rows(settings.resolved_database_url(), GAP_GROUPS_SQL)
    groups = [GapGroup(**row) for row in rows]
    table = Table(title="minimum gap between two rentals of a car (the dashboard's simulator)")
    for column in (
        "T (min)",
        "scope",
        "rentals blocked",
        "of all rentals",
        "revenue blocked €/day",
        "conflicts solved",
    ):
        table.add_column(column, justify="left" if column == "scope" else "right")
    for threshold in thresholds:
        for scope in SCOPES:
            result = outcome(groups, threshold, scope)
            table.add_row(
                str(threshold),
                SCOPE_LABELS[scope],
                f"{result.blocked_rentals:,}",
                f"{result.blocked_share:.1%}",
                f"{result.blocked_revenue_per_day:,.0f}",
                f"{result.conflicts_solved:,} of {result.conflicts:,}",
            )
    return table


def wait_until_scored(
    settings: Settings, since: datetime, expected: int, scorer_pid: int, timeout: float = 300
) -> tuple[int, int, float]:
    """Poll Postgres until every published event is stored or dead-lettered."""
    engine = create_engine(normalised_database_url(settings.resolved_database_url()))
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                scored, last_stored = conn.execute(SCORED_SINCE_SQL, {"since": since}).one()
                dead = conn.execute(DEAD_SINCE_SQL, {"since": since}).scalar_one()
            if scored + dead >= expected:
                return scored, dead, last_stored.timestamp() if last_stored else time.time()
            if not processes.alive(scorer_pid):
                raise RuntimeError(f"the scorer (pid {scorer_pid}) has exited; see its log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {scored + dead}/{expected} events scored after {timeout:.0f} s")
            time.sleep(0.05)
    finally:
        engine.dispose()


def summarise(settings: Settings) -> dict[str, int]:
    from answers.queries import TOTALS_SQL

    [[totals]] = read_rows(settings.resolved_database_url(), TOTALS_SQL)
    return {name: totals[name] for name in SUMMARY}


def query_help(settings: Settings) -> str:
    url = redact_url(settings.resolved_database_url())
    return (
        "Query the results with plain SQL, for example:\n"
        f"  psql '{url}' -c \"SELECT state, checkin_type, count(*), "
        'avg(delay_at_checkout_minutes) FROM delays GROUP BY 1, 2"\n'
        f"  psql '{url}' -c \"SELECT * FROM delays WHERE is_conflict "
        'ORDER BY waiting_minutes DESC LIMIT 10"\n'
        "Tables: rentals, cars, prices, price_requests, delays, dead_letters, drift_events, drift_signals."
    )
