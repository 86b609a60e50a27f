"""The dashboard's Bokeh figures. Each is built once per page around its data sources and
redrawn by replacing the sources' data (``update_*``), never rebuilt."""

from __future__ import annotations

import numpy as np
from bokeh.models import ColumnDataSource, FactorRange, HoverTool, NumeralTickFormatter, Span
from bokeh.plotting import figure

from answers.min_gap import MAX_THRESHOLD_MINUTES, SCOPE_LABELS, SCOPES, Curve
from answers.queries import DELAY_BIN_MINUTES, DELAY_RANGE_MINUTES

CHECKIN_COLORS = {"mobile": "#1f77b4", "connect": "#ff7f0e"}
SCOPE_COLORS = {"all": "#1f77b4", "connect": "#ff7f0e"}
BIN_WIDTH = DELAY_BIN_MINUTES * 0.45


class MinGapCharts:
    """Blocked rentals and conflicts solved over the threshold, one line per scope, with
    the selected threshold marked."""

    def __init__(self) -> None:
        self.lines = {scope: ColumnDataSource(_curve_data(None)) for scope in SCOPES}
        self.points = {scope: ColumnDataSource({"threshold": [], "blocked": [], "solved": []}) for scope in SCOPES}
        self.spans = [Span(location=0, dimension="height", line_dash="dashed", line_color="#555") for _ in range(2)]
        self.blocked = self._figure("Rentals blocked (share of all rentals)", "blocked", self.spans[0], "top_left")
        self.solved = self._figure(
            "Late-return conflicts solved (share of the scope's conflicts)", "solved", self.spans[1], "bottom_right"
        )

    def _figure(self, title: str, column: str, span: Span, legend: str):
        plot = figure(
            title=title,
            height=280,
            sizing_mode="stretch_width",
            x_range=(0, MAX_THRESHOLD_MINUTES),
            x_axis_label="minimum gap T (minutes)",
            tools="pan,wheel_zoom,reset,save",
        )
        plot.yaxis.formatter = NumeralTickFormatter(format="0.0%")
        for scope in SCOPES:
            line = plot.step(
                "threshold",
                column,
                source=self.lines[scope],
                mode="after",
                line_width=2,
                color=SCOPE_COLORS[scope],
                legend_label=SCOPE_LABELS[scope],
            )
            plot.scatter("threshold", column, source=self.points[scope], size=10, color=SCOPE_COLORS[scope])
            plot.add_tools(
                HoverTool(
                    renderers=[line],
                    mode="vline",
                    tooltips=[
                        ("scope", SCOPE_LABELS[scope]),
                        ("T", "@threshold min"),
                        ("blocked", "@blocked_rentals{0,0} (@blocked{0.0%})"),
                        ("revenue blocked", "@revenue{0,0} €/day"),
                        ("conflicts solved", "@solved_rentals{0,0} (@solved{0.0%})"),
                    ],
                )
            )
        plot.add_layout(span)
        plot.legend.location = legend
        return plot

    def update_curves(self, curves: dict[str, Curve]) -> None:
        for scope, curve in curves.items():
            self.lines[scope].data = _curve_data(curve)

    def mark(self, threshold: int, curves: dict[str, Curve]) -> None:
        for span in self.spans:
            span.location = threshold
        for scope, curve in curves.items():
            index = min(int(np.searchsorted(curve.thresholds, threshold)), len(curve.thresholds) - 1)
            self.points[scope].data = {
                "threshold": [threshold],
                "blocked": [float(curve.blocked_share[index])],
                "solved": [float(curve.solved_share[index])],
            }


def _curve_data(curve: Curve | None) -> dict:
    if curve is None:
        return {key: [] for key in ("threshold", "blocked", "blocked_rentals", "revenue", "solved", "solved_rentals")}
    return {
        "threshold": curve.thresholds,
        "blocked": curve.blocked_share,
        "blocked_rentals": curve.blocked_rentals,
        "revenue": curve.blocked_revenue_per_day,
        "solved": curve.solved_share,
        "solved_rentals": curve.conflicts_solved,
    }


class DelayChart:
    """Rentals by delay at checkout, in 30-minute bins, per check-in type."""

    def __init__(self) -> None:
        low, high = DELAY_RANGE_MINUTES
        self.sources = {kind: ColumnDataSource({"bin_start": [], "x": [], "rentals": []}) for kind in CHECKIN_COLORS}
        self.figure = figure(
            title=f"Delay at checkout (minutes; {low} and {high} hold everything beyond)",
            height=300,
            sizing_mode="stretch_width",
            x_axis_label="delay at checkout (minutes, 30-minute bins)",
            y_axis_label="rentals",
            tools="pan,wheel_zoom,reset,save",
        )
        for kind, color in CHECKIN_COLORS.items():
            bars = self.figure.vbar(
                x="x",
                top="rentals",
                width=BIN_WIDTH,
                source=self.sources[kind],
                color=color,
                legend_label=kind,
                alpha=0.85,
            )
            self.figure.add_tools(
                HoverTool(
                    renderers=[bars],
                    tooltips=[
                        ("check-in", kind),
                        ("from", "@bin_start min"),
                        ("rentals", "@rentals{0,0}"),
                    ],
                )
            )
        self.figure.add_layout(Span(location=0, dimension="height", line_color="#c00", line_dash="dotted"))
        self.figure.legend.location = "top_right"

    def update(self, histogram: list[dict]) -> None:
        for index, kind in enumerate(CHECKIN_COLORS):
            rows = [row for row in histogram if row["checkin_type"] == kind]
            shift = (index - 0.5) * BIN_WIDTH + DELAY_BIN_MINUTES / 2
            self.sources[kind].data = {
                "bin_start": [int(row["bin_start"]) for row in rows],
                "x": [row["bin_start"] + shift for row in rows],
                "rentals": [row["rentals"] for row in rows],
            }


class PriceByCarTypeChart:
    """Median price per day by car type, with the 10th–90th percentile range."""

    def __init__(self) -> None:
        self.source = ColumnDataSource({"car_type": [], "median": [], "p10": [], "p90": [], "prices": []})
        self.figure = figure(
            title="Price per day by car type (median, 10th–90th percentile)",
            height=300,
            y_range=[],
            sizing_mode="stretch_width",
            x_axis_label="€ per day",
            tools="save",
        )
        self.figure.hbar(y="car_type", left="p10", right="p90", height=0.3, source=self.source, color="#bbb")
        dots = self.figure.scatter(x="median", y="car_type", size=10, source=self.source, color="#1f77b4")
        self.figure.add_tools(
            HoverTool(
                renderers=[dots],
                tooltips=[
                    ("car type", "@car_type"),
                    ("median", "@median{0.0} €"),
                    ("10–90%", "@p10{0.0} – @p90{0.0} €"),
                    ("prices", "@prices{0,0}"),
                ],
            )
        )

    def update(self, rows: list[dict]) -> None:
        rows = [row for row in rows if row["car_type"]]
        self.figure.y_range.factors = [row["car_type"] for row in reversed(rows)]
        self.source.data = {key: [row[key] for row in rows] for key in ("car_type", "median", "p10", "p90", "prices")}


class ExplanationChart:
    """Why a price: one bar per feature, its contribution in euros (green raises the
    price, red lowers it), largest at the top; the base value and the price in the title."""

    def __init__(self, title: str = "Why this price: ask the bridge for one") -> None:
        self.source = ColumnDataSource({"feature": [], "euros": [], "color": [], "value": []})
        self.figure = _feature_bars(title, "contribution to the price per day (€)")
        self.figure.hbar(y="feature", right="euros", height=0.7, color="color", source=self.source)
        self.figure.add_tools(
            HoverTool(tooltips=[("feature", "@feature"), ("value", "@value"), ("€", "@euros{+0.00}")])
        )
        self.figure.add_layout(Span(location=0, dimension="height", line_color="#555"))

    def update(self, explanation: dict) -> None:
        """Show ``explanation`` (an ``Explanation`` as JSON)."""
        contributions = explanation["contributions"][::-1]  # Bokeh draws the first factor at the bottom
        self.figure.y_range.factors = [c["feature"] for c in contributions]
        self.source.data = {
            "feature": [c["feature"] for c in contributions],
            "euros": [c["euros"] for c in contributions],
            "color": ["#1a7f37" if c["euros"] >= 0 else "#b42318" for c in contributions],
            "value": [str(c["value"]) for c in contributions],
        }
        self.figure.title.text = (
            f"Why {explanation['price_per_day']:.2f} € a day: the model's base value "
            f"{explanation['base_value']:.2f} € plus these contributions (v{explanation['model_version']})"
        )


class ImportanceChart:
    """What drives the prices being served: each feature's mean absolute contribution (€)
    for the version of the latest price, largest at the top."""

    def __init__(self) -> None:
        self.source = ColumnDataSource({"feature": [], "euros": []})
        self.figure = _feature_bars(
            "What drives the prices: no champion yet", "mean |contribution| to the price per day over training cars (€)"
        )
        self.figure.hbar(y="feature", right="euros", height=0.7, color="#1f77b4", source=self.source)
        self.figure.add_tools(HoverTool(tooltips=[("feature", "@feature"), ("mean |€|", "@euros{0.00}")]))

    def update(self, version: str | None, importance: dict[str, float] | None) -> None:
        ranked = sorted((importance or {}).items(), key=lambda item: item[1])  # Bokeh draws the first at the bottom
        self.figure.y_range.factors = [feature for feature, _ in ranked]
        self.source.data = {"feature": [f for f, _ in ranked], "euros": [e for _, e in ranked]}
        if version is None:
            self.figure.title.text = "What drives the prices: no champion yet"
        elif importance is None:
            self.figure.title.text = f"What drives the prices: v{version} was trained before importance was logged"
        else:
            self.figure.title.text = f"What drives the prices of v{version}: mean |contribution| per feature"


def _feature_bars(title: str, x_axis_label: str):
    """An empty figure for one horizontal bar per feature, the features set by ``update``."""
    return figure(
        title=title,
        height=320,
        sizing_mode="stretch_width",
        y_range=FactorRange(),
        x_axis_label=x_axis_label,
        tools="save",
        toolbar_location=None,
    )
