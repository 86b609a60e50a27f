"""Why a price row picked in the latest prices: its car, as stored, asked of the bridge
with ``explain=true``, so the answer comes from the model serving now (the dashboard holds
no model). When that model no longer gives the stored price (another version, or the
car's features changed since), the note says so beside the explanation it shows."""

from __future__ import annotations

import asyncio
from html import escape

import panel as pn

from answers.explanations import CannotExplain, stored_price
from dashboard.charts import ExplanationChart
from dashboard.price_form import ask_bridge, show_explanation


class PickedPrice:
    def __init__(self, bridge_url: str, api_key: str | None, database_url: str, timeout: float = 5.0) -> None:
        self.bridge_url = bridge_url.rstrip("/")
        self.api_key = api_key
        self.database_url = database_url
        self.timeout = timeout
        self.note = pn.pane.HTML("", css_classes=["picked-price-note"], sizing_mode="stretch_width")
        self.why = ExplanationChart("Why this price: pick a row of the latest prices")
        self.why_table = pn.pane.HTML("", css_classes=["why-picked-price"], sizing_mode="stretch_width")

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(
            self.note,
            pn.pane.Bokeh(self.why.figure, sizing_mode="stretch_width"),
            self.why_table,
            sizing_mode="stretch_width",
        )

    async def show(self, price_id: str) -> None:
        try:
            price = await asyncio.to_thread(stored_price, self.database_url, price_id)
        except CannotExplain as error:
            self.note.object = _note(str(error), ok=False)
            return
        car = price.car.model_dump(exclude={"unknown_fields"})
        priced, failure = await ask_bridge(self.bridge_url, self.api_key, car, self.timeout)
        if priced is None or not priced.get("explanation"):
            self.note.object = failure or _note("the bridge priced the car without an explanation", ok=False)
            return
        stored = f"{price_id}: {price.price_per_day:.2f} € a day, by v{price.model_version}"
        if (priced["model_version"], priced["price_per_day"]) == (price.model_version, price.price_per_day):
            self.note.object = _note(stored, ok=True)
        else:  # the champion moved, or the car's stored features changed since
            self.note.object = _note(
                f"{stored}; v{priced['model_version']} prices its car as stored now at "
                f"{priced['price_per_day']:.2f} €, and that is what is explained here",
                ok=False,
            )
        show_explanation(self.why, self.why_table, priced["explanation"])


def _note(text: str, ok: bool) -> str:
    color = "#1a7f37" if ok else "#9a6700"
    return f'<div style="color:{color}">{escape(text)}</div>'
