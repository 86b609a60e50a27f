"""The dashboard in a real browser: headless Chromium (Debian's package, driven by
Playwright) against the dashboard process, with the real broker, PostgreSQL, scorer,
monitor and bridge behind it, while the whole delay history is replayed.

Every figure checked is computed here independently: pandas on the spreadsheet, and
the scorer's stored price of each rental for the euros.
"""

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from aiokafka import AIOKafkaProducer
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import create_engine, text

from producers.replay import publish_events, rental_events
from rentalstream import services
from rentalstream.processes import free_port
from runtime.postgres import roles
from runtime.settings import normalised_database_url
from schemas.cars import CarFeatures
from schemas.events import DeadLetter, DriftAlert
from schemas.predict import EXAMPLE_CAR
from tests.conftest import as_role
from tests.drift_report_reading import external_loads, read_report
from tests.helpers import champion, expected_prices, read_topic, service_process
from training.features import build_features

pytestmark = pytest.mark.browser

ARTIFACTS = Path(os.environ.get("RENTALSTREAM_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
# As root on a machine whose network is closed: no sandbox, and none of Chromium's own
# background connections (refused by the hundred otherwise).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
BAD_RENTALS = [b"{not json", b'{"rental_id": "seven"}', b"\xff\xfe"]  # the scorer and the monitor dead-letter each
# The monitor's signals (docs/monitoring.md): mileage and engine power; a share per
# category of fuel (4), paint colour (10), car type (8) and model key (28 makes); a share
# per equipment (7); the delay per check-in type (2); the conflict share; and the prices
# of rentals and of requests and their absolute error (3).
MONITORED_SIGNALS = 66
# How long an `expect` waits for the page to show a figure. Playwright's default, 5 s, is
# a guess at a quiet machine; here every service shares 2 cores with the browser. The
# condition is still what is waited on: a right page passes as soon as it shows it.
FIGURE_TIMEOUT_MS = 30_000
expect.set_options(timeout=FIGURE_TIMEOUT_MS)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get("RENTALSTREAM_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            f"no Chromium at {path}: install Debian's package (`apt-get install chromium`; .ci/run does) "
            "or point RENTALSTREAM_TEST_CHROMIUM at a Chromium or Chrome binary"
        )
    return path


@pytest.fixture
def dashboard_url(bridge_env, monitor_env, tmp_path):
    """The real dashboard (`rentalstream dashboard`), ready, pointed at the test's bridge
    (with its API key) and re-reading its aggregates every half second."""
    env = {
        **bridge_env,
        "RENTALSTREAM_MONITOR_PORT": monitor_env["RENTALSTREAM_MONITOR_PORT"],
        "RENTALSTREAM_DASHBOARD_PORT": str(free_port()),
        "RENTALSTREAM_DASHBOARD_AGGREGATE_SECONDS": "0.5",
        "RENTALSTREAM_DATABASE_URL": as_role(bridge_env["RENTALSTREAM_DATABASE_URL"], roles.READER),
    }
    url = f"http://127.0.0.1:{env['RENTALSTREAM_DASHBOARD_PORT']}"
    log = tmp_path / "dashboard.log"
    with service_process("dashboard", env, log) as process:
        services.wait_ready("dashboard", f"{url}/ready", process.pid, time.monotonic() + 120, str(log))
        yield url


def expected_figures(delays_xlsx: Path, database_url: str, bootstrap: str) -> dict:
    """The simulator's and the live view's figures, from the spreadsheet and the stored
    prices; the drift and dead-letter figures from what the monitor and the scorer
    published on their topics, not from the tables the page reads."""
    history = pd.read_excel(delays_xlsx, sheet_name="rentals_data")
    previous = history[["rental_id", "delay_at_checkout_in_minutes"]].set_axis(
        ["previous_ended_rental_id", "previous_delay"], axis=1
    )
    history = history.merge(previous, on="previous_ended_rental_id", how="left")
    history["conflict"] = history["previous_delay"] - history["time_delta_with_previous_rental_in_minutes"] > 0
    engine = create_engine(normalised_database_url(database_url))
    with engine.connect() as conn:
        prices = pd.read_sql(text("SELECT rental_id, price_per_day FROM prices WHERE rental_id IS NOT NULL"), conn)
    engine.dispose()
    history = history.merge(prices, on="rental_id", how="left")
    assert history["price_per_day"].notna().all()  # every rental was priced

    alerts = [DriftAlert.model_validate_json(r.value) for r in outside_playwright(read_topic(bootstrap, "drift"))]
    last_state = {alert.signal: alert.state for alert in alerts}  # each signal's newest alert
    letters = {
        letter.dead_letter_id: letter
        for letter in map(
            DeadLetter.model_validate_json, (r.value for r in outside_playwright(read_topic(bootstrap, "dead-letters")))
        )
    }
    figures = {
        "rentals": len(history),
        "signals": MONITORED_SIGNALS,
        "drifting": sum(state == "drifting" for state in last_state.values()),
        "dead_letters": [(letter.consumer, letter.raw_value, letter.reason) for letter in letters.values()],
    }
    delay = history["delay_at_checkout_in_minutes"]
    figures["late_share"] = (delay > 0).sum() / delay.notna().sum()
    figures["conflicts"] = int(history["conflict"].sum())
    for kind in ("mobile", "connect"):
        of_kind = delay[history["checkin_type"] == kind]
        figures[f"late_share_{kind}"] = (of_kind > 0).sum() / of_kind.notna().sum()
    figures["min_gap"] = lambda threshold, scope: min_gap(history, threshold, scope)
    figures["conflict_waits"] = dict(
        zip(
            history.loc[history["conflict"], "rental_id"],
            history.loc[history["conflict"], "previous_delay"]
            - history.loc[history["conflict"], "time_delta_with_previous_rental_in_minutes"],
        )
    )
    return figures


def outside_playwright(coroutine):
    """Run ``coroutine`` in a thread of its own: Playwright's sync API holds this thread's event loop."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def min_gap(history: pd.DataFrame, threshold: int, scope: str) -> dict:
    """The simulator's figures, row by row: blocked = in scope and planned < T after the previous rental."""
    in_scope = history if scope == "all" else history[history["checkin_type"] == "connect"]
    blocked = in_scope[in_scope["time_delta_with_previous_rental_in_minutes"] < threshold]
    return {
        "blocked": len(blocked),
        "share": len(blocked) / len(history),
        "revenue": blocked.loc[blocked["state"] == "ended", "price_per_day"].sum(),
        "solved": int(blocked["conflict"].sum()),
        "conflicts": int(in_scope["conflict"].sum()),
    }


def figure(page: Page, element_id: str):
    return page.locator(f"#{element_id}")


TABS = {  # each tab, and something only it shows
    "Live": ".prices-table",
    "Minimum gap": "#mg-blocked",
    "Delays": "#delay-late-share-mobile",
    "Pricing": ".price-form",
    "Drift": "#drift-signals",
    "Dead letters": "#dead-letters-total",
}


# The elements that stick out of the window while their parent does not (shadow roots included).
OVERFLOWING = """() => {
  const out = [];
  const walk = (root, parentFits) => {
    for (const el of root.children) {
      const box = el.getBoundingClientRect();
      const fits = box.right <= window.innerWidth + 1;
      if (!fits && parentFits) out.push(`${el.tagName}.${el.className} ${Math.round(box.left)}-${Math.round(box.right)}`);
      walk(el, fits);
      if (el.shadowRoot) walk(el.shadowRoot, fits);
    }
  };
  walk(document.documentElement, true);
  return out.slice(0, 10);
}"""


def open_tab(page: Page, name: str) -> None:
    """Click a tab; the live figures stay in view on every one."""
    page.locator(".dashboard-tabs .bk-tab", has_text=re.compile(f"^{name}$")).click()
    expect(page.locator(TABS[name]).first).to_be_visible()
    expect(figure(page, "live-rentals")).to_be_visible()


def number(value: float) -> str:
    return f"{value:,.0f}"


def test_dashboard_fills_up_during_a_replay_and_answers_the_min_gap_question(
    chromium,
    scorer_process,
    monitor_process,
    bridge_url,
    dashboard_url,
    scorer_env,
    clean_database,
    delays_xlsx,
    pricing_csv,
    mlflow_registry,
    tmp_path,
):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(dashboard_url)
            # Panel draws only once its websocket is open: wait for a figure, not for the load event.
            expect(figure(page, "live-rentals")).to_have_text("0")

            # The whole history, as fast as the broker takes it, plus three malformed rentals.
            # (In a thread of their own: Playwright's sync API holds this thread's event loop.)
            bootstrap = scorer_env["RENTALSTREAM_KAFKA_BOOTSTRAP"]
            events = rental_events(delays_xlsx, pricing_csv)
            with ThreadPoolExecutor(1) as thread:
                thread.submit(asyncio.run, publish_bad_rentals(bootstrap)).result()
                thread.submit(asyncio.run, publish_events(bootstrap, events)).result()

            # The same page, never reloaded, fills up as the scorer stores the rentals.
            seen_rentals, seen_latency = watch_the_live_figures(page, len(events))
            print(f"rentals scored as the page showed them: {seen_rentals}; p50 latencies shown: {seen_latency}")
            assert seen_latency, "the live latency never showed while events were being scored"

            expected = expected_figures(delays_xlsx, clean_database, bootstrap)
            check_live_and_delays(page, expected)
            check_min_gap(page, expected)
            check_drift_and_dead_letters(page, expected)
            check_retrains(page, clean_database)
            check_drift_report_download(browser, page, clean_database, tmp_path)
            check_conflicts_table(page, expected, tmp_path)
            check_price_form(page, mlflow_registry)
            page.locator(".price-form").screenshot(path=str(ARTIFACTS / "why-this-price.png"))
            check_picked_price(page, mlflow_registry, clean_database)
            open_tab(page, "Minimum gap")
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            check_tabs_on_a_laptop_and_a_large_screen(browser, dashboard_url, expected)
        finally:
            browser.close()


async def publish_bad_rentals(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in BAD_RENTALS:
            await producer.send_and_wait("rentals", value, key=b"bad")
    finally:
        await producer.stop()


def watch_the_live_figures(page: Page, rentals: int, timeout: float = 300) -> tuple[list[int], list[str]]:
    """Poll the page (as a user watching it would) until it shows every rental scored;
    return the counts and p50 latencies it showed on the way."""
    counts, latencies = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = int(figure(page, "live-rentals").inner_text().replace(",", ""))
        if not counts or counts[-1] != shown:
            counts.append(shown)
        latency = figure(page, "live-latency-p50").inner_text()
        if re.fullmatch(r"[\d,]+ ms", latency):
            latencies.append(latency)
        if shown == rentals:
            return counts, latencies
        time.sleep(0.25)
    pytest.fail(f"the page showed {counts[-1]} of {rentals} rentals after {timeout} s: {counts}")


def check_live_and_delays(page: Page, expected: dict) -> None:
    expect(figure(page, "live-rentals")).to_have_text(number(expected["rentals"]))
    expect(figure(page, "live-late-share")).to_have_text(f"{expected['late_share']:.1%}")
    expect(figure(page, "live-conflicts")).to_have_text(number(expected["conflicts"]))
    expect(figure(page, "live-model")).to_have_text("rentalstream-price v1")
    open_tab(page, "Delays")
    for kind in ("mobile", "connect"):
        expect(figure(page, f"delay-late-share-{kind}")).to_have_text(f"{expected[f'late_share_{kind}']:.1%}")


def check_min_gap(page: Page, expected: dict) -> None:
    def scopes_show(threshold: int) -> None:
        expect(figure(page, "mg-threshold")).to_have_text(str(threshold))
        for scope in ("all", "connect"):
            want = expected["min_gap"](threshold, scope)
            expect(figure(page, f"mg-{scope}-blocked")).to_have_text(number(want["blocked"]))
            expect(figure(page, f"mg-{scope}-revenue")).to_have_text(f"{number(want['revenue'])} €")
            expect(figure(page, f"mg-{scope}-solved")).to_have_text(number(want["solved"]))

    def headline_shows(threshold: int, scope: str) -> None:
        want = expected["min_gap"](threshold, scope)
        expect(figure(page, "mg-blocked")).to_have_text(number(want["blocked"]))
        expect(figure(page, "mg-blocked-share")).to_have_text(f"{want['share']:.1%}")
        expect(figure(page, "mg-revenue")).to_have_text(f"{number(want['revenue'])} €")
        expect(figure(page, "mg-solved")).to_have_text(number(want["solved"]))
        expect(figure(page, "mg-solved-share")).to_have_text(f"{want['solved'] / want['conflicts']:.1%}")

    open_tab(page, "Minimum gap")
    scopes_show(60)  # the default threshold
    headline_shows(60, "all")
    threshold_input = page.locator(".min-gap-threshold input").first
    threshold_input.fill("120")
    threshold_input.press("Enter")
    scopes_show(120)
    headline_shows(120, "all")
    page.locator(".min-gap-scope").get_by_text("Connect cars only").click()
    headline_shows(120, "connect")
    assert expected["min_gap"](120, "connect")["blocked"] < expected["min_gap"](120, "all")["blocked"]

    # The slider itself: one step with the keyboard, then a drag to wherever it lands.
    handle = page.locator(".min-gap-threshold .noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    scopes_show(130)
    headline_shows(130, "connect")
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 150, box["y"] + box["height"] / 2, steps=10)
    page.mouse.up()
    dragged_to = int(float(handle.get_attribute("aria-valuenow")))  # where the slider came to rest
    assert 130 < dragged_to <= 720
    scopes_show(dragged_to)
    headline_shows(dragged_to, "connect")


def check_drift_and_dead_letters(page: Page, expected: dict) -> None:
    open_tab(page, "Drift")
    expect(figure(page, "drift-signals")).to_have_text(str(expected["signals"]))
    expect(figure(page, "drift-drifting")).to_have_text(str(expected["drifting"]))
    # Both consumers of `rentals` dead-letter each malformed rental, as it was sent.
    assert sorted((consumer, raw) for consumer, raw, _ in expected["dead_letters"]) == sorted(
        (consumer, raw) for consumer in ("monitor", "scorer") for raw in BAD_RENTALS
    )
    open_tab(page, "Dead letters")
    expect(figure(page, "dead-letters-total")).to_have_text(str(len(expected["dead_letters"])))
    table = page.locator(".dead-letters-table")
    expect(table.locator(".tabulator-row")).to_have_count(len(expected["dead_letters"]))
    for _, _, reason in expected["dead_letters"]:
        expect(table).to_contain_text(reason)


def check_retrains(page: Page, database_url: str) -> None:
    """The Drift tab says no retrain was set off yet; once the retrainer has written two
    (as its own role: one that registered v2 two hours ago, one running now), it shows
    the newest in a sentence and both in its table, newest first, without a reload (the
    dashboard re-reads its aggregates every 15 s when idle)."""
    open_tab(page, "Drift")
    expect(page.get_by_text("No retrain set off by drift yet")).to_be_visible()
    engine = create_engine(normalised_database_url(as_role(database_url, roles.RETRAINER)))
    with engine.begin() as conn:
        conn.execute(
            text("""
                INSERT INTO retrains (alert_id, signal, reason, status, started_at, finished_at, reference_rows,
                                      recent_rows, recent_share, model_version, run_id, cv_mae, cv_rmse)
                VALUES ('prices/absolute_error@1', 'prices/absolute_error', 'error', 'registered',
                        now() - interval '2 hours', now() - interval '118 minutes', 4840, 560, 0.7, '2', 'run-2',
                        9.8149, 15.2),
                       ('rentals/engine_power@7', 'rentals/engine_power', 'sustained drift', 'running', now(),
                        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
            """)
        )
    engine.dispose()
    expect(figure(page, "retrain-status")).to_have_text("running", timeout=60_000)
    expect(page.get_by_text("by rentals/engine_power (sustained drift)")).to_be_visible()
    rows = page.locator(".retrains-table .tabulator-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator('[tabulator-field="status"]')).to_have_text("running")
    expect(rows.nth(1).locator('[tabulator-field="status"]')).to_have_text("registered")
    expect(rows.nth(1).locator('[tabulator-field="model_version"]')).to_have_text("2")
    expect(rows.nth(1).locator('[tabulator-field="training_rows"]')).to_have_text("560 recent + 4,840 reference")
    expect(rows.nth(1).locator('[tabulator-field="cv_mae"]')).to_have_text("9.81")


def check_drift_report_download(browser, page: Page, database_url: str, tmp_path: Path) -> None:
    """The Drift tab's report downloads as one HTML file that says what the monitor wrote,
    and shows its charts in a browser that may fetch nothing."""
    open_tab(page, "Drift")
    with page.expect_download(timeout=120_000) as download:
        page.locator(".drift-report-download").click()
    saved = tmp_path / "drift-report.html"
    download.value.save_as(saved)
    html = saved.read_text(encoding="utf-8")
    assert external_loads(html) == []
    report = read_report(html)
    engine = create_engine(normalised_database_url(database_url))
    with engine.connect() as conn:
        states = dict(conn.execute(text("SELECT signal, state FROM drift_signals")).all())
    engine.dispose()
    assert len(report.signals) == MONITORED_SIGNALS
    assert {s: r["state"] for s, r in report.signals.items()} == states

    offline = browser.new_page()
    fetched = []
    offline.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    offline.on("request", lambda request: fetched.append(request.url))
    try:
        offline.goto(saved.as_uri())
        # 6 numeric signals and 5 share charts; no error curve, as a replay carries no real price.
        expect(offline.locator("svg")).to_have_count(11)
        assert [url for url in fetched if not url.startswith("file:")] == []
    finally:
        offline.close()


def check_conflicts_table(page: Page, expected: dict, tmp_path: Path) -> None:
    open_tab(page, "Live")
    rows = page.locator(".conflicts-table .tabulator-row")
    expect(rows.first).to_be_visible()

    def cell(field: str) -> int:
        return int(rows.first.locator(f'[tabulator-field="{field}"]').inner_text())  # an id, not "305,525"

    rental_id, waiting = cell("rental_id"), cell("waiting_minutes")
    assert rental_id in expected["conflict_waits"]
    assert waiting == expected["conflict_waits"][rental_id]
    assert "," not in rows.first.locator('[tabulator-field="car_id"]').inner_text()

    # The table downloads as CSV: its rows (all, not only those scrolled into view), ids as ids.
    with page.expect_download() as download:
        page.locator(".conflicts-download").get_by_text("Download CSV").click()
    saved = tmp_path / "conflicts.csv"
    download.value.save_as(saved)
    table = pd.read_csv(saved)
    assert list(table.columns)[:3] == ["rental_id", "car_id", "checkin_type"]
    assert table.rental_id.iloc[0] == rental_id
    assert all(table.waiting_minutes[i] == expected["conflict_waits"][r] for i, r in enumerate(table.rental_id))


def check_picked_price(page: Page, mlflow_registry, database_url: str) -> None:
    """A rental's price picked in the latest prices is explained: its stored car, priced
    and explained by the champion, as LightGBM's own contributions say."""
    open_tab(page, "Live")
    row = page.locator(".prices-table .tabulator-row", has_text="rental-").first
    price_id = row.locator('[tabulator-field="price_id"]').inner_text()
    row.locator('[tabulator-field="price_id"]').click()
    expect(page.locator(".picked-price-note")).to_contain_text(f"{price_id}: ")
    expect(page.locator(".picked-price-note")).to_contain_text("a day, by v1")

    engine = create_engine(normalised_database_url(database_url))
    with engine.connect() as conn:
        car = (
            conn.execute(
                text("SELECT c.* FROM prices p JOIN cars c USING (car_id) WHERE p.price_id = :id"), {"id": price_id}
            )
            .mappings()
            .one()
        )
    engine.dispose()
    _, model = champion(mlflow_registry)
    stored = {name: car[name] for name in CarFeatures.model_fields if name != "unknown_fields"}
    check_explanation_table(page, ".why-picked-price", model, stored)


def check_tabs_on_a_laptop_and_a_large_screen(browser, dashboard_url: str, expected: dict) -> None:
    """Every tab of a page opened at 1280x800 and at 1920x1080: it shows its content and
    the live figures, with no sideways scrolling; a screenshot of each. (A page opened
    at one size and then shrunk keeps its first layout: Bokeh does not narrow it again.)"""
    for width, height in ((1280, 800), (1920, 1080)):
        page = browser.new_page(viewport={"width": width, "height": height})
        try:
            page.goto(dashboard_url)
            expect(figure(page, "live-rentals")).to_have_text(number(expected["rentals"]))
            for name in TABS:
                open_tab(page, name)
                if not page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"):
                    pytest.fail(f"the {name} tab scrolls sideways at {width}x{height}: {page.evaluate(OVERFLOWING)}")
                file = f"dashboard-{width}x{height}-{name.lower().replace(' ', '-')}.png"
                page.screenshot(path=str(ARTIFACTS / file))
        finally:
            page.close()


def check_price_form(page: Page, mlflow_registry) -> None:
    _, model = champion(mlflow_registry)
    want = expected_prices(model, [EXAMPLE_CAR])[0]
    open_tab(page, "Pricing")
    # No challenger: one line says so, no empty comparison table.
    expect(page.locator(".no-challenger")).to_contain_text("No challenger is being scored")
    expect(page.locator(".challenge-table")).to_be_hidden()
    expect(page.locator(".challenge-download")).to_be_hidden()
    page.get_by_role("button", name="Price this car").click()
    expect(figure(page, "bridge-price")).to_have_text(f"{want:.2f}")

    shown = check_explanation_table(page, ".why-this-price", model, EXAMPLE_CAR)
    assert round(sum(shown.values()), 2) == want

    # What drives the prices: the importance logged with the version of the latest price (the
    # champion), as MLflow holds it.
    tracking_uri, trained = mlflow_registry
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run_id = client.get_model_version("rentalstream-price", trained.champion_version).run_id
    with tempfile.TemporaryDirectory() as folder:
        logged = json.loads(Path(client.download_artifacts(run_id, "importance.json", folder)).read_text())
    rows = page.locator(".model-importance tr")
    expect(rows).to_have_count(1 + len(logged))
    shown = {
        feature: float(euros) for feature, euros in (row.locator("td").all_inner_texts() for row in rows.all()[1:])
    }
    assert shown == {feature: round(euros, 2) for feature, euros in logged.items()}
    assert list(shown) == sorted(logged, key=lambda feature: -logged[feature])  # largest first


def check_explanation_table(page: Page, selector: str, model, car: dict) -> dict[str, float]:
    """The table under ``selector`` shows the base value and each feature's contribution
    as LightGBM's own contributions for ``car`` give them, through pandas (within a cent:
    they are rounded to sum to the price); what it shows, by feature."""
    frame = build_features([car])
    exact = dict(zip([*frame.columns, "base value"], model.booster_.predict(frame, pred_contrib=True)[0], strict=True))
    rows = page.locator(f"{selector} tr")
    expect(rows).to_have_count(1 + len(exact))  # the header, the base value, one row per feature
    shown = {}
    for row in rows.all()[1:]:
        feature, _, euros = (cell.inner_text() for cell in row.locator("td").all())
        shown[feature] = float(euros)
    assert shown.keys() == exact.keys()
    assert all(abs(shown[name] - exact[name]) <= 0.01 for name in exact), (shown, exact)
    return shown
