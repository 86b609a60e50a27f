"""What the dashboard shows before data arrives, when the bridge is away, and with
strings it did not write."""

import asyncio

from answers.min_gap import outcome
from dashboard.feed import Snapshot
from dashboard.figures import dead_letter_html, drift_html, live_html, min_gap_html
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


def test_strings_from_the_data_are_escaped():
    html = drift_html([{"signal": "rentals/paint_color=<script>", "state": "drifting"}])
    assert "<script>" not in html and "&lt;script&gt;" in html
    html = dead_letter_html([{"consumer": "<b>", "topic": "rentals", "dead_letters": 2}])
    assert "&lt;b&gt; on rentals: 2" in html


def test_the_price_form_says_when_the_bridge_does_not_answer():
    url = f"http://127.0.0.1:{free_port()}"
    answer = asyncio.run(PriceForm(url, api_key=None, timeout=2).ask())
    assert "price-error" in answer and f"the bridge at {url} did not answer" in answer and "is it running?" in answer
