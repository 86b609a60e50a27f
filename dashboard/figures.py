"""The dashboard's figures as HTML: each value in an element with a stable id (the
browser test reads them by id), styled by ``CSS``."""

from __future__ import annotations

from html import escape

from answers.min_gap import SCOPE_LABELS, MinGapOutcome
from dashboard.feed import Snapshot

CSS = """
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
.figure { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; background: #fafafa; }
.figure .label { color: #555; font-size: 0.85em; }
.figure .value { font-size: 1.6em; font-weight: 600; }
table.scopes { border-collapse: collapse; } table.scopes td, table.scopes th { padding: 4px 12px; text-align: right; }
table.scopes th:first-child, table.scopes td:first-child { text-align: left; }
"""


def figure_html(element_id: str, label: str, value: str) -> str:
    return (
        f'<div class="figure"><div class="label">{label}</div><div class="value" id="{element_id}">{value}</div></div>'
    )


def live_html(snapshot: Snapshot) -> str:
    totals = snapshot.aggregates.totals if snapshot.aggregates else {}
    late = totals.get("late_returns", 0) / totals["with_delay"] if totals.get("with_delay") else None
    return (
        '<div class="figures">'
        + "".join(
            [
                figure_html(
                    "live-events-per-second", "events scored / s (last 5 s)", f"{snapshot.events_per_second:,.0f}"
                ),
                figure_html("live-latency-p50", "event → scored p50", _ms(snapshot.latency_p50_ms)),
                figure_html("live-latency-p99", "event → scored p99", _ms(snapshot.latency_p99_ms)),
                figure_html("live-rentals", "rentals scored", f"{totals.get('rentals', 0):,}"),
                figure_html("live-late-share", "late returns", "–" if late is None else f"{late:.1%}"),
                figure_html("live-conflicts", "drivers who waited", f"{totals.get('conflicts', 0):,}"),
                figure_html("live-model", "model (last price)", escape(snapshot.model or "–")),
            ]
        )
        + "</div>"
    )


def min_gap_html(result: MinGapOutcome) -> str:
    return (
        '<div class="figures">'
        + "".join(
            [
                figure_html(
                    "mg-blocked", f"rentals blocked ({SCOPE_LABELS[result.scope]})", f"{result.blocked_rentals:,}"
                ),
                figure_html("mg-blocked-share", f"of all {result.rentals:,} rentals", f"{result.blocked_share:.1%}"),
                figure_html(
                    "mg-revenue", "revenue blocked (€ per day of rental)", f"{result.blocked_revenue_per_day:,.0f} €"
                ),
                figure_html("mg-solved", f"conflicts solved (of {result.conflicts:,})", f"{result.conflicts_solved:,}"),
                figure_html("mg-solved-share", "of the scope's conflicts", f"{result.solved_share:.1%}"),
            ]
        )
        + "</div>"
    )


def scopes_html(results: list[MinGapOutcome]) -> str:
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
        + (f": {escape(', '.join(drifting))}" if drifting else "")
        + "</p>"
    )


def retrains_html(retrains: list[dict]) -> str:
    """The newest retrain drift set off, in a sentence: what set it off and what came of it."""
    if not retrains:
        return (
            "<p>No retrain set off by drift yet (the retrainer runs with <code>RENTALSTREAM_RETRAIN=challenger</code>;"
            " <code>rentalstream retrains</code> lists them too).</p>"
        )
    latest = retrains[0]
    status = latest["status"]
    said = (
        f"Latest retrain, set off {latest['started_at']:%Y-%m-%d %H:%M:%S} UTC by "
        f"{escape(latest['signal'])} ({escape(latest['reason'])}): <b id='retrain-status'>{escape(status)}</b>"
    )
    if status == "registered":
        said += (
            f" <b id='retrain-version'>v{escape(str(latest['model_version']))}</b> as the challenger"
            f" (CV MAE {latest['cv_mae']:.2f} € on {latest['recent_rows']:,} recent and"
            f" {latest['reference_rows']:,} reference rows); <code>rentalstream promote"
            f" {escape(str(latest['model_version']))} --if-better</code> promotes it once live traffic says it is better"
        )
    elif latest["detail"]:
        said += f": {escape(latest['detail'])}"
    return f"<p>{said}.</p>"


def training_rows(retrain: dict) -> str:
    """What a retrain learned from, once it knows: a column of counts that may be empty
    would show as floats ("560.0")."""
    if retrain["recent_rows"] is None:
        return ""
    return f"{retrain['recent_rows']:,} recent + {retrain['reference_rows']:,} reference"


def dead_letter_html(counts: list[dict]) -> str:
    total = sum(row["dead_letters"] for row in counts)
    detail = escape(", ".join(f"{row['consumer']} on {row['topic']}: {row['dead_letters']:,}" for row in counts))
    return f"<p><b id='dead-letters-total'>{total:,}</b> dead letters" + (f" ({detail})" if detail else "") + "</p>"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def importance_html(version: str | None, importance: dict[str, float] | None) -> str:
    """The champion's global importance as a table, largest first (the chart's numbers)."""
    if version is None or importance is None:
        return ""
    rows = "".join(
        f"<tr><td>{escape(feature)}</td><td class='euros' style='text-align:right'>{euros:.2f}</td></tr>"
        for feature, euros in sorted(importance.items(), key=lambda item: -item[1])
    )
    return (
        f'<table style="font-size:0.9em"><tr><th>feature (v{escape(version)})</th><th>mean |€|</th></tr>{rows}</table>'
    )
