"""One open dashboard page: its widgets, figures and tables, redrawn from the live feed's
snapshot on a periodic callback (never once per message)."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from functools import partial

import pandas as pd
import panel as pn

from answers.min_gap import MAX_THRESHOLD_MINUTES, SCOPE_LABELS, SCOPES, curve, outcome
from answers.model_comparison import verdict
from dashboard.charts import DelayChart, ImportanceChart, MinGapCharts, PriceByCarTypeChart
from dashboard.feed import LiveFeed, Snapshot
from dashboard.figures import (
    CSS,
    dead_letter_html,
    delay_html,
    drift_html,
    importance_html,
    live_html,
    min_gap_html,
    retrains_html,
    scopes_html,
    training_rows,
)
from dashboard.metrics import DashboardMetrics
from dashboard.model_importance import ModelImportance
from dashboard.picked_price import PickedPrice
from dashboard.price_form import PriceForm
from runtime.settings import Settings

DEFAULT_THRESHOLD_MINUTES = 60
PLAIN_COLUMNS = {"partition", "offset", "model_version", "champion_version", "challenger_version"}


def build_page(
    feed: LiveFeed, settings: Settings, metrics: DashboardMetrics, importance: ModelImportance
) -> pn.viewable.Viewable:
    page = DashboardPage(feed, settings, importance)
    metrics.sessions.inc()
    pn.state.curdoc.on_session_destroyed(lambda _context: metrics.sessions.dec())
    pn.state.add_periodic_callback(page.redraw, period=int(settings.dashboard.refresh_seconds * 1000))
    pn.state.onload(page.show_importance)
    return page.layout


class DashboardPage:
    """One open page: its widgets, figures and tables, redrawn from the feed."""

    def __init__(self, feed: LiveFeed, settings: Settings, importance: ModelImportance) -> None:
        self.feed = feed
        self.importance = importance
        self.importance_for: str | None = None  # the version of the latest price when it was last shown
        self.importance_chart = ImportanceChart()
        self.importance_table = pn.pane.HTML("", css_classes=["model-importance"], sizing_mode="stretch_width")
        self.shown_version = -1
        self.shown_aggregates = None
        self.curves: dict = {}
        self.newest_rows: dict[int, tuple] = {}

        self.live = _html()
        self.threshold = pn.widgets.EditableIntSlider(
            label="Minimum gap T between two rentals of a car (minutes)",
            start=0,
            end=MAX_THRESHOLD_MINUTES,
            step=10,
            value=DEFAULT_THRESHOLD_MINUTES,
            width=420,
            css_classes=["min-gap-threshold"],
        )
        self.scope = pn.widgets.RadioButtonGroup(
            label="Scope",
            options={label: scope for scope, label in SCOPE_LABELS.items()},
            value="all",
            css_classes=["min-gap-scope"],
        )
        self.min_gap_figures = _html()
        self.min_gap_scopes = _html()
        self.min_gap_charts = MinGapCharts()
        self.threshold.param.watch(self._show_min_gap, "value")
        self.scope.param.watch(self._show_min_gap, "value")

        self.delay_figures = _html()
        self.delay_chart = DelayChart()
        self.conflicts = _table(
            "conflicts",
            [
                "rental_id",
                "car_id",
                "checkin_type",
                "planned_gap_minutes",
                "previous_delay_minutes",
                "waiting_minutes",
                "scored_at",
            ],
        )

        self.prices = _table(
            "prices",
            ["price_id", "car_id", "price_per_day", "listed_price_per_day", "model_version", "latency_ms", "scored_at"],
            selectable=1,
        )
        self.price_chart = PriceByCarTypeChart()
        self.challenge = _table(
            "challenge",
            [
                "champion_version",
                "challenger_version",
                "prices",
                "mean_difference",
                "mean_abs_difference",
                "with_true_price",
                "champion_mae",
                "challenger_mae",
                "champion_closer",
                "challenger_closer",
                "verdict",
            ],
        )
        api_key = settings.bridge.api_key.get_secret_value() if settings.bridge.api_key else None
        self.price_form = PriceForm(settings.bridge.resolved_url(), api_key)
        self.picked_price = PickedPrice(settings.bridge.resolved_url(), api_key, settings.resolved_database_url())
        self.prices.param.watch(self._explain_picked_price, "selection")

        self.drift_figures = _html()
        self.signals = _table(
            "signals", ["signal", "state", "events_seen", "window_mean", "reference_mean", "last_alert_at"]
        )
        self.alerts = _table(
            "alerts", ["signal", "state", "before_mean", "after_mean", "reference_mean", "triggered_by", "detected_at"]
        )
        self.retrain_figures = _html()
        self.retrains = _table(
            "retrains",
            ["started_at", "signal", "reason", "status", "training_rows", "model_version", "cv_mae"],
        )
        self.dead_letter_figures = _html()
        self.dead_letters = _table(
            "dead-letters", ["consumer", "topic", "partition", "offset", "reason", "size_bytes", "received_at"]
        )

        self.no_challenger = pn.pane.Markdown(
            "No challenger is being scored: `rentalstream train --challenger` or "
            "`rentalstream promote VERSION --challenger` starts one.",
            css_classes=["no-challenger"],
        )

        self.challenge_block = _with_download("challenge", self.challenge)  # hidden, with its button, when empty

        # The live figures above the tabs, so every tab shows them.
        self.tabs = pn.Tabs(
            (
                "Live",
                pn.Column(
                    pn.Row(
                        _titled("Latest prices (pick one to see why)", self.prices),
                        _titled("Latest rentals whose driver waited for the previous car", self.conflicts),
                        sizing_mode="stretch_width",
                    ),
                    self.picked_price.panel(),
                    sizing_mode="stretch_width",
                ),
            ),
            (
                "Minimum gap",
                pn.Column(
                    pn.pane.Markdown("### Minimum gap between rentals: what would it block, what would it solve?"),
                    pn.Row(self.threshold, self.scope),
                    self.min_gap_figures,
                    self.min_gap_scopes,
                    pn.Row(
                        pn.pane.Bokeh(self.min_gap_charts.blocked, sizing_mode="stretch_width"),
                        pn.pane.Bokeh(self.min_gap_charts.solved, sizing_mode="stretch_width"),
                        sizing_mode="stretch_width",
                    ),
                    sizing_mode="stretch_width",
                ),
            ),
            (
                "Delays",
                pn.Column(
                    self.delay_figures,
                    pn.pane.Bokeh(self.delay_chart.figure, sizing_mode="stretch_width"),
                    sizing_mode="stretch_width",
                ),
            ),
            (
                "Pricing",
                pn.Column(
                    pn.Row(
                        pn.pane.Bokeh(self.price_chart.figure, sizing_mode="stretch_width"),
                        self.price_form.panel(),
                        sizing_mode="stretch_width",
                    ),
                    pn.pane.Markdown(
                        "#### Champion vs challenger on live traffic (prices in €; closer = nearer the "
                        "listed price, where the request carried one)"
                    ),
                    self.no_challenger,
                    self.challenge_block,
                    pn.Row(
                        pn.pane.Bokeh(self.importance_chart.figure, sizing_mode="stretch_width"),
                        self.importance_table,
                        sizing_mode="stretch_width",
                    ),
                    sizing_mode="stretch_width",
                ),
            ),
            (
                "Drift",
                pn.Column(
                    self.drift_figures,
                    pn.pane.HTML(
                        '<a class="drift-report-download" href="./drift-report.html" download="drift-report.html">'
                        "Download the drift report</a> (one HTML file, viewable offline: every signal against "
                        "its reference, the alerts in order, the model's error; written when you click, in a "
                        "few seconds)",
                        stylesheets=[CSS],
                    ),
                    pn.Row(
                        _titled("Signals", self.signals),
                        _titled("Latest alerts", self.alerts),
                        sizing_mode="stretch_width",
                    ),
                    pn.pane.Markdown("#### Retrains set off by drift, newest first"),
                    self.retrain_figures,
                    _with_download("retrains", self.retrains),
                    sizing_mode="stretch_width",
                ),
            ),
            (
                "Dead letters",
                pn.Column(self.dead_letter_figures, _with_download("dead-letters", self.dead_letters)),
            ),
            sizing_mode="stretch_width",
            css_classes=["dashboard-tabs"],
        )
        self.layout = pn.Column(
            pn.pane.Markdown("# rentalstream — live operations"),
            self.live,
            self.tabs,
            sizing_mode="stretch_width",
        )
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
        serving = _serving_version(snapshot)
        if serving is not None and serving != self.importance_for:
            self.importance_for = serving  # a promotion, a rollback: what drives the prices now
            pn.state.execute(partial(self.show_importance, serving))
        for table, rows in (
            (self.conflicts, snapshot.conflicts),
            (self.prices, snapshot.prices),
            (self.alerts, snapshot.alerts),
            (self.dead_letters, snapshot.dead_letters),
        ):
            self._show_rows(table, rows)

    async def show_importance(self, version: str | None = None) -> None:
        """The importance of ``version``; by default of the latest price's version, or of the
        champion's before anything is priced."""
        if version is None:
            version = self.importance_for = _serving_version(self.feed.snapshot())
        version, importance = await self.importance.of(version)
        # A Bokeh model changes under the document's lock: on the next tick, not in this callback.
        pn.state.execute(lambda: self.importance_chart.update(version, importance), schedule=True)
        self.importance_table.object = importance_html(version, importance)

    async def _explain_picked_price(self, event) -> None:
        if event.new:
            await self.picked_price.show(str(self.prices.value.iloc[event.new[0]]["price_id"]))

    def _show_rows(self, table: pn.widgets.Tabulator, rows: list[dict]) -> None:
        """Replace a table's rows only when its list changed (a replaced table loses its scroll)."""
        newest = (len(rows), tuple(map(str, rows[0].values())) if rows else None)
        if self.newest_rows.get(id(table)) != newest:
            self.newest_rows[id(table)] = newest
            table.value = _frame(rows, table)

    def _show_aggregates(self, snapshot: Snapshot) -> None:
        aggregates = snapshot.aggregates
        self.curves = {scope: curve(aggregates.gap_groups, scope) for scope in SCOPES}
        self.min_gap_charts.update_curves(self.curves)
        self._show_min_gap()
        self.delay_chart.update(aggregates.delay_histogram)
        self.delay_figures.object = delay_html(aggregates.totals, aggregates.delay_histogram)
        self.price_chart.update(aggregates.price_by_car_type)
        self.challenge.value = _frame(
            [{**r, "verdict": verdict(r)} for r in aggregates.model_comparison], self.challenge
        )
        self.no_challenger.visible = not aggregates.model_comparison  # one line, not an empty table
        self.challenge_block.visible = bool(aggregates.model_comparison)
        self.signals.value = _frame(aggregates.drift_signals, self.signals)
        self.drift_figures.object = drift_html(aggregates.drift_signals)
        self.retrains.value = _frame(
            [{**r, "training_rows": training_rows(r)} for r in aggregates.retrains], self.retrains
        )
        self.retrain_figures.object = retrains_html(aggregates.retrains)
        self.dead_letter_figures.object = dead_letter_html(aggregates.dead_letter_counts)

    def _show_min_gap(self, *_events) -> None:
        if self.shown_aggregates is None:
            return
        groups = self.shown_aggregates.gap_groups
        threshold = int(self.threshold.value)
        self.min_gap_figures.object = min_gap_html(outcome(groups, threshold, self.scope.value))
        self.min_gap_scopes.object = scopes_html([outcome(groups, threshold, scope) for scope in SCOPES])
        self.min_gap_charts.mark(threshold, self.curves)


def _serving_version(snapshot: Snapshot) -> str | None:
    return snapshot.prices[0]["model_version"] if snapshot.prices else None


def _html() -> pn.pane.HTML:
    return pn.pane.HTML(sizing_mode="stretch_width", stylesheets=[CSS])


def _table(name: str, columns: list[str], selectable: bool | int = False) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(
        pd.DataFrame(columns=columns),
        show_index=False,
        disabled=True,
        height=260,
        sizing_mode="stretch_width",
        pagination=None,
        # Columns share the page's width, a long cell cut short (its whole text on hover):
        # sized to their data, one long dead-letter reason would widen every tab.
        layout="fit_columns",
        configuration={"columnDefaults": {"tooltip": True}},
        css_classes=[f"{name}-table"],
        selectable=selectable,
    )


def _with_download(name: str, table: pn.widgets.Tabulator) -> pn.Column:
    """``table`` with a button that downloads the rows it shows as CSV."""
    button = pn.widgets.FileDownload(
        callback=lambda: io.StringIO(table.value.to_csv(index=False)),
        filename=f"{name}.csv",
        label="Download CSV",
        button_type="light",
        css_classes=[f"{name}-download"],
    )
    return pn.Column(table, button, sizing_mode="stretch_width")


def _titled(title: str, table: pn.widgets.Tabulator) -> pn.Column:
    name = table.css_classes[0].removesuffix("-table")
    return pn.Column(pn.pane.Markdown(f"#### {title}"), _with_download(name, table), sizing_mode="stretch_width")


def _frame(rows: list[dict], table: pn.widgets.Tabulator) -> pd.DataFrame:
    columns = list(table.value.columns)
    return pd.DataFrame(
        [{c: _id(row.get(c)) if _is_id(c) else _cell(row.get(c)) for c in columns} for row in rows], columns=columns
    )


def _is_id(column: str) -> bool:
    return column in PLAIN_COLUMNS or column.endswith("_id")


def _id(value) -> str:
    """An id as text, so Tabulator prints it as written ("305525", not "305,525"), and an
    absent one blank: not "NaN", which a column of numbers makes of it."""
    return "" if value is None else str(value)


def _cell(value):
    # Tabulator would show a timestamp's date only (operators want the time, UTC) and every digit of a float.
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 2) if abs(value) >= 1 else float(f"{value:.3g}")
    return value
