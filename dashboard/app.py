"""The Panel dashboard: ``rentalstream dashboard`` (and ``up`` / ``demo``).

One process serves every page: a ``LiveFeed`` follows the result topics and Postgres
(``dashboard.feed``); each page redraws from the feed's snapshot every
``dashboard_refresh_seconds``. Besides the page at ``/`` it serves ``/health``,
``/ready`` (seeded from Postgres and holding partitions) and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import panel as pn
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from tornado.web import RequestHandler

from dashboard.charts import DelayChart, MinGapCharts, PriceByCarTypeChart
from dashboard.feed import LiveFeed, Snapshot
from dashboard.metrics import DashboardMetrics
from dashboard.min_gap import MAX_THRESHOLD_MINUTES, SCOPE_LABELS, SCOPES, curve, outcome
from dashboard.price_form import PriceForm
from rentalstream.db import async_engine
from rentalstream.settings import Settings

log = logging.getLogger("rentalstream.dashboard")
DEFAULT_THRESHOLD_MINUTES = 60
FEED_RETRY_SECONDS = 2.0

CSS = """
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
.figure { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; background: #fafafa; }
.figure .label { color: #555; font-size: 0.85em; }
.figure .value { font-size: 1.6em; font-weight: 600; }
table.scopes { border-collapse: collapse; } table.scopes td, table.scopes th { padding: 4px 12px; text-align: right; }
table.scopes th:first-child, table.scopes td:first-child { text-align: left; }
"""


def build_page(feed: LiveFeed, settings: Settings, metrics: DashboardMetrics) -> pn.viewable.Viewable:
    page = DashboardPage(feed, settings)
    metrics.sessions.inc()
    pn.state.curdoc.on_session_destroyed(lambda _context: metrics.sessions.dec())
    pn.state.add_periodic_callback(page.redraw, period=int(settings.dashboard_refresh_seconds * 1000))
    return page.layout


class DashboardPage:
    """One open page: its widgets, figures and tables, redrawn from the feed."""

    def __init__(self, feed: LiveFeed, settings: Settings) -> None:
        self.feed = feed
        self.shown_version = -1
        self.shown_aggregates = None
        self.curves: dict = {}

        self.live = _html()
        self.threshold = pn.widgets.EditableIntSlider(
            name="Minimum gap T between two rentals of a car (minutes)", start=0, end=MAX_THRESHOLD_MINUTES,
            step=10, value=DEFAULT_THRESHOLD_MINUTES, width=420, css_classes=["min-gap-threshold"],
        )  # fmt: skip
        self.scope = pn.widgets.RadioButtonGroup(
            name="Scope", options={label: scope for scope, label in SCOPE_LABELS.items()}, value="all",
            css_classes=["min-gap-scope"],
        )
        self.min_gap_figures = _html()
        self.min_gap_scopes = _html()
        self.min_gap_charts = MinGapCharts()
        self.threshold.param.watch(self._show_min_gap, "value")
        self.scope.param.watch(self._show_min_gap, "value")

        self.delay_figures = _html()
        self.delay_chart = DelayChart()
        self.conflicts = _table("conflicts", ["rental_id", "car_id", "checkin_type", "planned_gap_minutes",
                                 "previous_delay_minutes", "waiting_minutes", "scored_at"])  # fmt: skip

        self.prices = _table("prices", ["price_id", "car_id", "price_per_day", "listed_price_per_day", "model_version",
                              "latency_ms", "scored_at"])  # fmt: skip
        self.price_chart = PriceByCarTypeChart()
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        self.price_form = PriceForm(settings.resolved_bridge_url(), api_key)

        self.drift_figures = _html()
        self.signals = _table("signals", ["signal", "state", "events_seen", "window_mean", "reference_mean", "last_alert_at"])
        self.alerts = _table("alerts", ["signal", "state", "before_mean", "after_mean", "reference_mean", "triggered_by",
                              "detected_at"])  # fmt: skip
        self.dead_letter_figures = _html()
        self.dead_letters = _table("dead-letters", ["consumer", "topic", "partition", "offset", "reason", "size_bytes", "received_at"])

        self.layout = pn.Column(
            pn.pane.Markdown("# rentalstream — live operations"),
            self.live,
            pn.pane.Markdown("## Minimum gap between rentals: what would it block, what would it solve?"),
            pn.Row(self.threshold, self.scope),
            self.min_gap_figures,
            self.min_gap_scopes,
            pn.Row(pn.pane.Bokeh(self.min_gap_charts.blocked, sizing_mode="stretch_width"),
                   pn.pane.Bokeh(self.min_gap_charts.solved, sizing_mode="stretch_width"), sizing_mode="stretch_width"),
            pn.pane.Markdown("## Delays at checkout"),
            self.delay_figures,
            pn.pane.Bokeh(self.delay_chart.figure, sizing_mode="stretch_width"),
            pn.pane.Markdown("#### Latest rentals whose driver waited for the previous car"),
            self.conflicts,
            pn.pane.Markdown("## Pricing"),
            pn.Row(pn.Column(pn.pane.Markdown("#### Latest prices"), self.prices, sizing_mode="stretch_width"),
                   self.price_form.panel(), sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.price_chart.figure, sizing_mode="stretch_width"),
            pn.pane.Markdown("## Drift"),
            self.drift_figures,
            pn.Row(pn.Column(pn.pane.Markdown("#### Signals"), self.signals, sizing_mode="stretch_width"),
                   pn.Column(pn.pane.Markdown("#### Latest alerts"), self.alerts, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            pn.pane.Markdown("## Dead letters"),
            self.dead_letter_figures,
            self.dead_letters,
            sizing_mode="stretch_width",
        )  # fmt: skip
        self.redraw()

    def redraw(self) -> None:
        snapshot = self.feed.snapshot()
        self.live.object = live_html(snapshot)  # rates move with the clock, not only with messages
        if snapshot.version == self.shown_version:
            return
        self.shown_version = snapshot.version
        if snapshot.aggregates is not None and snapshot.aggregates is not self.shown_aggregates:
            self.shown_aggregates = snapshot.aggregates
            self._show_aggregates(snapshot)
        self.conflicts.value = _frame(snapshot.conflicts, self.conflicts)
        self.prices.value = _frame(snapshot.prices, self.prices)
        self.alerts.value = _frame(snapshot.alerts, self.alerts)
        self.dead_letters.value = _frame(snapshot.dead_letters, self.dead_letters)

    def _show_aggregates(self, snapshot: Snapshot) -> None:
        aggregates = snapshot.aggregates
        self.curves = {scope: curve(aggregates.gap_groups, scope) for scope in SCOPES}
        self.min_gap_charts.update_curves(self.curves)
        self._show_min_gap()
        self.delay_chart.update(aggregates.delay_histogram)
        self.delay_figures.object = delay_html(aggregates.totals, aggregates.delay_histogram)
        self.price_chart.update(aggregates.price_by_car_type)
        self.signals.value = _frame(aggregates.drift_signals, self.signals)
        self.drift_figures.object = drift_html(aggregates.drift_signals)
        self.dead_letter_figures.object = dead_letter_html(aggregates.dead_letter_counts)

    def _show_min_gap(self, *_events) -> None:
        if self.shown_aggregates is None:
            return
        groups = self.shown_aggregates.gap_groups
        threshold = int(self.threshold.value)
        self.min_gap_figures.object = min_gap_html(outcome(groups, threshold, self.scope.value))
        self.min_gap_scopes.object = scopes_html([outcome(groups, threshold, scope) for scope in SCOPES])
        self.min_gap_charts.mark(threshold, self.curves)


# -- the figures, as HTML with stable ids (the browser test reads them) --------------


def figure_html(element_id: str, label: str, value: str) -> str:
    return f'<div class="figure"><div class="label">{label}</div><div class="value" id="{element_id}">{value}</div></div>'


def live_html(snapshot: Snapshot) -> str:
    totals = snapshot.aggregates.totals if snapshot.aggregates else {}
    late = totals.get("late_returns", 0) / totals["with_delay"] if totals.get("with_delay") else None
    return '<div class="figures">' + "".join([
        figure_html("live-events-per-second", "events scored / s (last 5 s)", f"{snapshot.events_per_second:,.0f}"),
        figure_html("live-latency-p50", "event → scored p50", _ms(snapshot.latency_p50_ms)),
        figure_html("live-latency-p99", "event → scored p99", _ms(snapshot.latency_p99_ms)),
        figure_html("live-rentals", "rentals scored", f"{totals.get('rentals', 0):,}"),
        figure_html("live-late-share", "late returns", "–" if late is None else f"{late:.1%}"),
        figure_html("live-conflicts", "drivers who waited", f"{totals.get('conflicts', 0):,}"),
        figure_html("live-model", "model (last price)", snapshot.model or "–"),
    ]) + "</div>"  # fmt: skip


def min_gap_html(result) -> str:
    return '<div class="figures">' + "".join([
        figure_html("mg-blocked", f"rentals blocked ({SCOPE_LABELS[result.scope]})", f"{result.blocked_rentals:,}"),
        figure_html("mg-blocked-share", f"of all {result.rentals:,} rentals", f"{result.blocked_share:.1%}"),
        figure_html("mg-revenue", "revenue blocked (€ per day of rental)", f"{result.blocked_revenue_per_day:,.0f} €"),
        figure_html("mg-solved", f"conflicts solved (of {result.conflicts:,})", f"{result.conflicts_solved:,}"),
        figure_html("mg-solved-share", "of the scope's conflicts", f"{result.solved_share:.1%}"),
    ]) + "</div>"  # fmt: skip


def scopes_html(results) -> str:
    rows = "".join(
        f"<tr><td>{SCOPE_LABELS[r.scope]}</td><td id='mg-{r.scope}-blocked'>{r.blocked_rentals:,}</td>"
        f"<td>{r.blocked_share:.1%}</td><td id='mg-{r.scope}-revenue'>{r.blocked_revenue_per_day:,.0f} €</td>"
        f"<td id='mg-{r.scope}-solved'>{r.conflicts_solved:,}</td><td>{r.conflicts:,}</td></tr>"
        for r in results
    )
    threshold = results[0].threshold_minutes
    return (
        f"<table class='scopes'><tr><th>at T = <span id='mg-threshold'>{threshold}</span> min</th>"
        "<th>rentals blocked</th><th>of all rentals</th><th>revenue blocked / day</th><th>conflicts solved</th>"
        f"<th>conflicts in scope</th></tr>{rows}</table>"
        "<p style='color:#555'>Blocked: planned to start less than T minutes after the previous rental of the car "
        "ended. Revenue: one day at the model's price for each blocked rental that ended (canceled ones earned "
        "nothing). Solved: blocked rentals whose driver had to wait for the previous car.</p>"
    )


def delay_html(totals: dict, histogram: list[dict]) -> str:
    figures = []
    for kind in ("mobile", "connect"):
        rows = [row for row in histogram if row["checkin_type"] == kind]
        known = sum(row["rentals"] for row in rows)
        late = sum(row["late_returns"] for row in rows)
        share = f"{late / known:.1%}" if known else "–"
        figures.append(figure_html(f"delay-late-share-{kind}", f"late returns, {kind} ({known:,} known)", share))
    waited = totals.get("conflicts", 0)
    mean_wait = totals.get("waiting_minutes", 0) / waited if waited else 0
    figures.append(figure_html("delay-conflicts", "drivers who waited", f"{waited:,}"))
    figures.append(figure_html("delay-mean-wait", "mean wait (minutes)", f"{mean_wait:,.0f}"))
    return '<div class="figures">' + "".join(figures) + "</div>"


def drift_html(signals: list[dict]) -> str:
    drifting = [row["signal"] for row in signals if row["state"] == "drifting"]
    if not signals:
        return "<p>No signal states yet: is the drift monitor running? (<code>rentalstream monitor</code>)</p>"
    return (
        f"<p><b id='drift-drifting'>{len(drifting)}</b> of <b id='drift-signals'>{len(signals)}</b> signals drifting"
        + (f": {', '.join(drifting)}" if drifting else "") + "</p>"
    )


def dead_letter_html(counts: list[dict]) -> str:
    total = sum(row["dead_letters"] for row in counts)
    detail = ", ".join(f"{row['consumer']} on {row['topic']}: {row['dead_letters']:,}" for row in counts)
    return f"<p><b id='dead-letters-total'>{total:,}</b> dead letters" + (f" ({detail})" if detail else "") + "</p>"


def _html() -> pn.pane.HTML:
    return pn.pane.HTML(sizing_mode="stretch_width", stylesheets=[CSS])


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def _table(name: str, columns: list[str]) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(
        pd.DataFrame(columns=columns), show_index=False, disabled=True, height=260,
        sizing_mode="stretch_width", pagination=None, css_classes=[f"{name}-table"],
    )  # fmt: skip


def _frame(rows: list[dict], table: pn.widgets.Tabulator) -> pd.DataFrame:
    columns = list(table.value.columns)
    return pd.DataFrame([{c: _cell(row.get(c)) for c in columns} for row in rows], columns=columns)


def _cell(value):
    # Tabulator would show a timestamp's date only (operators want the time, UTC) and every digit of a float.
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 2) if abs(value) >= 1 else float(f"{value:.3g}")
    return value


# -- the server ----------------------------------------------------------------


def serve(settings: Settings) -> None:
    """Serve the dashboard until SIGTERM/SIGINT."""
    metrics = DashboardMetrics()
    engine = async_engine(settings.resolved_database_url(), pool_size=2)
    feed = LiveFeed(
        settings.resolved_kafka_bootstrap(), engine, group_id=settings.dashboard_group_id,
        buffer_rows=settings.dashboard_buffer_rows, aggregate_seconds=settings.dashboard_aggregate_seconds,
        metrics=metrics,
    )  # fmt: skip
    address = f"{settings.dashboard_host}:{settings.dashboard_port}"
    server = pn.serve(
        {"/": lambda: build_page(feed, settings, metrics)},
        address=settings.dashboard_host, port=settings.dashboard_port, show=False, start=False,
        websocket_origin=[address, f"localhost:{settings.dashboard_port}", *settings.dashboard_websocket_origins],
        title="rentalstream", admin=False,
        extra_patterns=[
            ("/health", _Answer, {"check": lambda: True}),
            ("/ready", _Answer, {"check": lambda: feed.ready}),
            ("/metrics", _Metrics, {"metrics": metrics}),
        ],
    )  # fmt: skip
    # Tornado logs every 5xx at ERROR, and /ready answers 503 until the feed holds its partitions.
    logging.getLogger("tornado.access").setLevel(logging.CRITICAL)
    loop = server.io_loop.asyncio_loop
    following = loop.create_task(_follow(feed))

    def stop() -> None:
        following.cancel()
        following.add_done_callback(lambda _task: (server.stop(), loop.create_task(engine.dispose()),
                                                   loop.call_later(0.2, server.io_loop.stop)))  # fmt: skip

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    server.start()
    log.info("dashboard serving url=http://%s/", address)
    server.io_loop.start()


async def _follow(feed: LiveFeed) -> None:
    """Keep the feed running: a broker or database that is away at start, or goes away,
    is retried, while the pages keep showing what they have."""
    while True:
        try:
            await feed.run()
        except asyncio.CancelledError:
            raise
        except (KafkaError, SQLAlchemyError, OSError) as error:
            log.warning("live feed stopped error=%s; retrying in %.0f s", str(error).splitlines()[0], FEED_RETRY_SECONDS)
            await asyncio.sleep(FEED_RETRY_SECONDS)


class _Answer(RequestHandler):
    def initialize(self, check: Callable[[], bool]) -> None:
        self.check = check

    def get(self) -> None:
        ok = self.check()
        self.set_status(200 if ok else 503)
        self.write("ok" if ok else "not ready")


class _Metrics(RequestHandler):
    def initialize(self, metrics: DashboardMetrics) -> None:
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.metrics.registry))
