"""Dashboard responsiveness while the whole history is replayed at full speed.

    python benchmarks/dashboard_responsiveness.py [--keep-home]

Starts a fresh embedded stack in a temporary home with the scorer, the monitor and the
dashboard, opens the dashboard in headless Chromium (Debian's, through Playwright), and
measures what an analyst feels:

- the round trip of a threshold change (type a T, press Enter, until the page shows the
  figures for it), idle and then again and again during the replay;
- how long a new page takes to draw its first figures in the middle of the replay;
- how the rentals-scored figure filled up on the open page, and how long after the last
  rental was committed the page showed it;
- the dashboard's CPU time and peak RSS over the replay.

Everything (broker, PostgreSQL, scorer, monitor, dashboard, Chromium, the replay) shares
the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import threading
import time

import psutil
from against import parse_or_compare
from bench_stack import fresh_stack
from playwright.sync_api import Page, sync_playwright
from replay_throughput import PeakRss
from sqlalchemy import create_engine, text

from producers.replay import publish_events, rental_events
from rentalstream import services
from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path
from runtime.settings import normalised_database_url

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IDLE_CHANGES = 20


FIGURES = r"^(conditions|first draw|threshold change|rentals scored)"  # the lines --against sets side by side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary stack folder")
    args = parse_or_compare(parser, FIGURES)
    if args is None:
        return
    chromium = os.environ.get("RENTALSTREAM_TEST_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        raise SystemExit("no chromium on the PATH: `make chromium`, or set RENTALSTREAM_TEST_CHROMIUM")
    wanted = (services.SCORER, services.MONITOR, services.DASHBOARD)
    with fresh_stack(wanted, keep_home=args.keep_home) as (settings, state), sync_playwright() as playwright:
        events = rental_events(
            dataset_path(DELAYS_XLSX, settings.data_dir), dataset_path(PRICING_CSV, settings.data_dir)
        )
        url = state["services"]["dashboard"]["url"] + "/"
        dashboard = psutil.Process(state["services"]["dashboard"]["pid"])
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        first_draw = load(page, url)
        idle = [change_threshold(page, 30 + 10 * (i % 40)) for i in range(IDLE_CHANGES)]

        cpu_before = dashboard.cpu_times()
        peak_rss = PeakRss(dashboard.pid)
        replay = Replay(settings.resolved_kafka_bootstrap(), events)
        busy, shown, second_page = [], [], None
        while (rentals := shown_rentals(page)) < len(events):
            if not shown or shown[-1][1] != rentals:
                shown.append((time.monotonic() - replay.started, rentals))
            if second_page is None and rentals >= len(events) // 2:
                second_page = load(browser.new_page(viewport={"width": 1400, "height": 1000}), url)
            busy.append(change_threshold(page, 30 + 10 * (len(busy) % 40)))
            if time.monotonic() - replay.started > 600:
                raise SystemExit(f"the page showed {rentals} of {len(events)} rentals after 600 s")
        page_done = time.time()
        shown.append((time.monotonic() - replay.started, rentals))
        peak_rss.stop()
        cpu = sum(dashboard.cpu_times()[:2]) - sum(cpu_before[:2])
        replay.join()
        last_commit = last_stored_at(settings.resolved_database_url())
        browser.close()

    print(
        f"conditions: {os.cpu_count()} CPU cores shared by broker, PostgreSQL, scorer, monitor, dashboard, "
        f"headless Chromium and the replay; {len(events):,} rentals replayed as fast as possible "
        f"({replay.stats.describe()}); the page redraws every {settings.dashboard.refresh_seconds:g} s, "
        f"aggregates re-read every {settings.dashboard.aggregate_seconds:g} s while events arrive"
    )
    print(f"first draw of the page (idle):           {first_draw * 1000:8,.0f} ms")
    print(f"first draw of a new page mid-replay:     {(second_page or 0) * 1000:8,.0f} ms")
    print(f"threshold change → figures shown, idle:   {describe(idle)}")
    print(f"threshold change → figures shown, replay: {describe(busy)}")
    print(
        "rentals scored as the page showed them (seconds after the replay started): "
        + ", ".join(f"{rentals:,} @ {at:.1f}" for at, rentals in shown)
    )
    print(f"last rental committed → shown on the page: {page_done - last_commit:6.2f} s")
    print(
        f"dashboard during the replay: {cpu:.1f} CPU seconds over {shown[-1][0]:.1f} s; "
        f"peak RSS {peak_rss.peak / 2**20:,.0f} MiB"
    )


class Replay:
    """The whole history published as fast as possible, in a thread of its own (Playwright's
    sync API holds the main thread's event loop)."""

    def __init__(self, bootstrap: str, events) -> None:
        self.stats = None
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(bootstrap, events), daemon=True)
        self._thread.start()

    def _run(self, bootstrap, events) -> None:
        self.stats = asyncio.run(publish_events(bootstrap, events))

    def join(self) -> None:
        self._thread.join()


def load(page: Page, url: str) -> float:
    started = time.perf_counter()
    page.goto(url)
    page.locator("#mg-all-blocked").wait_for()  # drawn once the websocket is open
    return time.perf_counter() - started


def change_threshold(page: Page, minutes: int) -> float:
    if page.locator("#mg-threshold").inner_text() == str(minutes):
        minutes += 10
    box = page.locator(".min-gap-threshold input").first
    started = time.perf_counter()
    box.fill(str(minutes))
    box.press("Enter")
    page.locator(f"#mg-threshold:text-is('{minutes}')").wait_for()
    return time.perf_counter() - started


def shown_rentals(page: Page) -> int:
    return int(page.locator("#live-rentals").inner_text().replace(",", ""))


def last_stored_at(database_url: str) -> float:
    engine = create_engine(normalised_database_url(database_url))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT max(stored_at) FROM rentals")).scalar_one()
    engine.dispose()
    return stored.timestamp()


def describe(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"n={len(ms)}, median {statistics.median(ms):,.0f} ms, p95 {p95:,.0f} ms, max {ms[-1]:,.0f} ms"


if __name__ == "__main__":
    main()
