"""`rentalstream drift-report`: the monitor's last word on every signal, from drift_signals."""

from __future__ import annotations

from rich import box
from rich.table import Table
from sqlalchemy import case, select

from runtime.postgres.engines import read_rows
from schemas.tables import drift_signals


def signal_states(database_url: str, drifting_only: bool = False) -> list[dict]:
    """Every signal's row, drifting ones first, then by name."""
    query = select(drift_signals).order_by(
        case((drift_signals.c.state == "drifting", 0), else_=1), drift_signals.c.signal
    )
    if drifting_only:
        query = query.where(drift_signals.c.state == "drifting")
    [rows] = read_rows(database_url, query)
    return rows


def report_table(rows: list[dict], drifting_only: bool = False) -> Table:
    drifting = sum(1 for r in rows if r["state"] == "drifting")
    detectors = ", ".join(sorted({r["detector"] for r in rows}))
    table = Table(
        title=f"drift: {drifting} signal(s) drifting" + ("" if drifting_only else f" of {len(rows)}"),
        caption=f"detectors: {detectors}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("signal", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for column in ("events", "mean now", "reference"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["signal"],
            f"[red]{r['state']}[/red]" if r["state"] == "drifting" else r["state"],
            f"{r['events_seen']:,}",
            _number(r["window_mean"]),
            _number(r["reference_mean"]),
        )
    return table


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
