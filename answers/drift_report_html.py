"""The drift report (``answers.drift_report``) as one HTML file that needs nothing else:
its charts are inline SVG drawn by Matplotlib, and it has no script at all, so it opens
offline, prints, and loads nothing from anywhere. Tables are plain HTML; every figure
cell also carries its raw value in ``data-value``, for whoever reads the file with a
program. (BokehJS, inlined, would have worked offline too, but its bundle carries a
MathJax loader that fetches from a CDN: see docs/decisions.md.)
"""

from __future__ import annotations

import io
from datetime import datetime

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from answers.drift_report import DriftReport, ErrorSection, NumericSection, ShareSection

REFERENCE_COLOR, RECENT_COLOR, ALERT_COLOR = "#1f77b4", "#ff7f0e", "#d62728"
BINS = 20  # for a version whose reference has no histogram: the recent values alone, on as many bins
WIDTH = 10  # inches: the page's width at 96 dpi

_templates = Environment(loader=PackageLoader("answers", "templates"), autoescape=select_autoescape(["html"]))


def render(report: DriftReport) -> str:
    """The whole document."""
    charts = {f"numeric-{i}": _numeric_chart(s) for i, s in enumerate(report.numeric)}
    charts |= {f"shares-{i}": _share_chart(s) for i, s in enumerate(report.shares)}
    if report.error.rolling_mae:
        charts["error"] = _error_chart(report.error)
    svgs = {name: _svg(chart, name) for name, chart in charts.items()}
    return _templates.get_template("drift_report.html").render(
        report=report, charts=svgs, number=number, share=share, when=when
    )


def number(value: float | None) -> str:
    """A figure as the tables print it: whole above a thousand, four digits below.

    >>> number(140464.2), number(3.14159), number(None)
    ('140,464', '3.142', '')
    """
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def share(value: float | None) -> str:
    """A share as a percentage.

    >>> share(0.1234), share(None)
    ('12.3%', '')
    """
    return "" if value is None else f"{value:.1%}"


def when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S %Z}".strip()


def _svg(chart: Figure, name: str) -> Markup:
    """The chart as an <svg> element, text kept as text; ids salted by ``name`` so that
    the charts of one page never share one."""
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        chart.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return Markup(text[text.index("<svg") :])  # Matplotlib escapes the text it writes


def _numeric_chart(section: NumericSection) -> Figure:
    reference = section.reference
    histogram = reference.histogram
    edges = (
        np.asarray(histogram.edges) if histogram is not None else np.linspace(reference.low, reference.high, BINS + 1)
    )
    chart = Figure(figsize=(WIDTH, 2.6))
    axes = chart.add_subplot()
    widths = np.diff(edges)
    if histogram is not None:
        axes.bar(
            edges[:-1], histogram.shares, widths, align="edge", color=REFERENCE_COLOR, alpha=0.4, label="reference"
        )
    if len(section.recent):
        counts, _ = np.histogram(section.recent, bins=edges)
        axes.bar(
            edges[:-1], counts / len(section.recent), widths, align="edge", color=RECENT_COLOR, alpha=0.4,
            label=f"recent ({len(section.recent):,} values)",
        )  # fmt: skip
    axes.set_title(f"{section.title}: reference against recent", loc="left")
    axes.set_xlabel(f"{section.unit}, clipped to the reference's 1st–99th percentile")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    _finish(axes)
    return chart


def _share_chart(section: ShareSection) -> Figure:
    positions = np.arange(len(section.labels))
    chart = Figure(figsize=(WIDTH, 0.8 + 0.32 * len(section.labels)))
    axes = chart.add_subplot()
    recent = [s.recent if s.recent is not None else 0.0 for s in section.signals]
    axes.barh(positions - 0.2, [s.reference for s in section.signals], 0.4, color=REFERENCE_COLOR, label="reference")
    axes.barh(positions + 0.2, recent, 0.4, color=RECENT_COLOR, label="recent")
    axes.set_yticks(positions, section.labels)
    for tick, signal in zip(axes.get_yticklabels(), section.signals, strict=True):
        if signal.state == "drifting":
            tick.set_color(ALERT_COLOR)
            tick.set_fontweight("bold")
    axes.invert_yaxis()
    axes.set_title(f"{section.title}: share of rentals, reference against recent", loc="left")
    axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    _finish(axes)
    return chart


def _error_chart(section: ErrorSection) -> Figure:
    chart = Figure(figsize=(WIDTH, 2.6))
    axes = chart.add_subplot()
    axes.plot(section.times, section.rolling_mae, color=RECENT_COLOR, label=f"rolling MAE ({section.window:,} prices)")
    if section.estimated_now is not None:
        axes.plot(
            section.times,
            section.estimated_rolling_mae,
            color=RECENT_COLOR,
            linestyle=":",
            label="estimated before the real price, same prices",
        )
    axes.axhline(section.cv_mae, color=ALERT_COLOR, label=f"cross-validated {section.cv_mae:.2f} €")
    axes.axhline(section.threshold, color=ALERT_COLOR, linestyle="--", label=f"alert above {section.threshold:.2f} €")
    axes.set_ylabel("€ per day")
    axes.set_ylim(bottom=0)
    axes.set_title("the model's error on prices whose real price came back", loc="left")
    chart.autofmt_xdate()
    _finish(axes)
    return chart


def _finish(axes) -> None:
    axes.legend(loc="best", frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
