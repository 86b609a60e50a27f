"""What the dashboard shows before data arrives, when the bridge is away, and with
strings it did not write."""

import asyncio
from datetime import UTC, datetime

from answers.min_gap import outcome
from dashboard.feed import Snapshot
from dashboard.figures import dead_letter_html, drift_html, live_html, min_gap_html, retrains_html, training_rows
from dashboard.price_form import PriceForm
from rentalstream.processes import free_port


def test_an_empty_stack_shows_dashes_and_zeros_not_errors():
    empty = Snapshot(
        version=0,
        aggregates=None,
        events_per_second=0.0,
        latency_p50_ms=None,
        latency_p99_ms=None,
        prices_seen=0,
        model=None,
    )
    html = live_html(empty)
    assert 'id="live-rentals">0<' in html and 'id="live-latency-p50">–<' in html and 'id="live-late-share">–<' in html
    assert "is the drift monitor running?" in drift_html([])
    assert 'id="mg-blocked-share">0.0%<' in min_gap_html(outcome([], 60, "all"))
    assert dead_letter_html([]) == "<p><b id='dead-letters-total'>0</b> dead letters</p>"
    assert "No retrain set off by drift yet" in retrains_html([])


def test_strings_from_the_data_are_escaped():
    html = drift_html([{"signal": "rentals/paint_color=<script>", "state": "drifting"}])
    assert "<script>" not in html and "&lt;script&gt;" in html
    html = dead_letter_html([{"consumer": "<b>", "topic": "rentals", "dead_letters": 2}])
    assert "&lt;b&gt; on rentals: 2" in html
    html = retrains_html([retrain(status="failed", detail="<img src=x onerror=alert(1)>")])
    assert "<img" not in html and ": &lt;img src=x" in html


def retrain(**fields) -> dict:
    """A row of ``retrains`` as the retrainer writes it (training/retrainer.py)."""
    return {
        "started_at": datetime(2026, 12, 3, 9, 5, 7, tzinfo=UTC),
        "signal": "prices/absolute_error",
        "reason": "error",
        "status": "running",
        "recent_rows": None,
        "reference_rows": None,
        "model_version": None,
        "cv_mae": None,
        "detail": None,
        **fields,
    }


def test_the_latest_retrain_says_what_set_it_off_and_what_came_of_it():
    running = retrains_html([retrain()])
    assert "set off 2026-12-03 09:05:07 UTC by prices/absolute_error (error)" in running
    assert "<b id='retrain-status'>running</b>." in running

    registered = retrain(status="registered", recent_rows=1480, reference_rows=4840, model_version="3", cv_mae=9.8149)
    html = retrains_html([registered, retrain(status="skipped", detail="only 120 labelled requests")])
    assert "<b id='retrain-status'>registered</b> <b id='retrain-version'>v3</b> as the challenger" in html
    assert "(CV MAE 9.81 € on 1,480 recent and 4,840 reference rows)" in html
    assert "rentalstream promote 3 --if-better" in html
    assert "labelled requests" not in html  # the newest only
    assert (training_rows(registered), training_rows(retrain())) == ("1,480 recent + 4,840 reference", "")

    skipped = retrains_html([retrain(status="skipped", detail="only 120 labelled requests, 200 needed")])
    assert "<b id='retrain-status'>skipped</b>: only 120 labelled requests, 200 needed." in skipped


def test_the_price_form_says_when_the_bridge_does_not_answer():
    url = f"http://127.0.0.1:{free_port()}"
    answer = asyncio.run(PriceForm(url, api_key=None, timeout=2).ask())
    assert "price-error" in answer and f"the bridge at {url} did not answer" in answer and "is it running?" in answer
