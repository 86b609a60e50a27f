"""A small form that prices one car through the HTTP bridge's ``POST /predict``, exactly
as a product service would (with the API key when one is set), and shows why that price
(``?explain=true``): a chart and a table of the features' contributions."""

from __future__ import annotations

from html import escape

import httpx
import panel as pn

from dashboard.charts import ExplanationChart
from schemas.cars import CAR_TYPES, EQUIPMENT, FUELS, MAX_ENGINE_POWER_HP, MAX_MILEAGE_KM, PAINT_COLORS
from schemas.predict import EXAMPLE_CAR


class PriceForm:
    def __init__(self, bridge_url: str, api_key: str | None, timeout: float = 5.0) -> None:
        self.bridge_url = bridge_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.model_key = pn.widgets.TextInput(label="Brand", value=EXAMPLE_CAR["model_key"])
        self.mileage = pn.widgets.IntInput(
            label="Mileage (km)", value=EXAMPLE_CAR["mileage"], start=0, end=MAX_MILEAGE_KM
        )
        self.engine_power = pn.widgets.IntInput(
            label="Engine power (hp)", value=EXAMPLE_CAR["engine_power"], start=1, end=MAX_ENGINE_POWER_HP
        )
        self.fuel = pn.widgets.Select(label="Fuel", options=list(FUELS), value=EXAMPLE_CAR["fuel"])
        self.paint_color = pn.widgets.Select(
            label="Paint", options=list(PAINT_COLORS), value=EXAMPLE_CAR["paint_color"]
        )
        self.car_type = pn.widgets.Select(label="Car type", options=list(CAR_TYPES), value=EXAMPLE_CAR["car_type"])
        self.equipment = pn.widgets.CheckBoxGroup(
            label="Equipment", options=list(EQUIPMENT), value=[e for e in EQUIPMENT if EXAMPLE_CAR[e]], inline=False
        )
        self.button = pn.widgets.Button(label="Price this car", color="primary")
        self.answer = pn.pane.HTML("", css_classes=["price-answer"], sizing_mode="stretch_width")
        self.why = ExplanationChart()
        self.why_table = pn.pane.HTML("", css_classes=["why-this-price"], sizing_mode="stretch_width")
        self.button.on_click(self._price)

    def car(self) -> dict:
        return {
            "model_key": self.model_key.value,
            "mileage": self.mileage.value,
            "engine_power": self.engine_power.value,
            "fuel": self.fuel.value,
            "paint_color": self.paint_color.value,
            "car_type": self.car_type.value,
            **{name: name in self.equipment.value for name in EQUIPMENT},
        }

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown(f"#### Ask the bridge\n`POST {self.bridge_url}/predict`"),
            pn.Row(self.model_key, self.car_type),
            pn.Row(self.mileage, self.engine_power),
            pn.Row(self.fuel, self.paint_color),
            self.equipment,
            self.button,
            self.answer,
            pn.pane.Bokeh(self.why.figure, sizing_mode="stretch_width"),
            self.why_table,
            css_classes=["price-form"],
        )

    async def _price(self, _event) -> None:
        self.button.disabled = True
        try:
            self.answer.object = await self.ask()
        finally:
            self.button.disabled = False

    async def ask(self) -> str:
        priced, failure = await ask_bridge(self.bridge_url, self.api_key, self.car(), self.timeout)
        if priced is None:
            return failure
        explanation = priced.get("explanation")  # a bridge older than explanations prices without one
        if explanation:
            show_explanation(self.why, self.why_table, explanation)
        unknown = f" (priced without: {', '.join(priced['unknown_fields'])})" if priced["unknown_fields"] else ""
        return (
            f'<div class="price-ok" style="color:#1a7f37;font-size:1.1em"><span id="bridge-price">'
            f"{priced['price_per_day']:.2f}</span> € per day, by "
            f"{escape(priced['model_name'])} v{escape(priced['model_version'])}{escape(unknown)}</div>"
        )


async def ask_bridge(bridge_url: str, api_key: str | None, car: dict, timeout: float) -> tuple[dict | None, str]:
    """``POST /predict?explain=true`` for one car: (the answer, "") or (None, an error as HTML)."""
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(f"{bridge_url}/predict", params={"explain": "true"}, json=car, headers=headers)
    except httpx.HTTPError as error:
        return None, _error(
            f"the bridge at {bridge_url} did not answer ({type(error).__name__}); "
            "is it running? (`rentalstream bridge` or `rentalstream up`)"
        )
    if response.status_code != 200:
        return None, _error(f"the bridge answered {response.status_code}: {_detail(response)}")
    return response.json(), ""


def show_explanation(chart: ExplanationChart, table: pn.pane.HTML, explanation: dict) -> None:
    # A Bokeh model changes under the document's lock: on the next tick, not in this callback.
    pn.state.execute(lambda: chart.update(explanation), schedule=True)
    table.object = _contribution_table(explanation)


def _contribution_table(explanation: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(c['feature'])}</td><td>{escape(str(c['value']))}</td>"
        f'<td class="euros" style="text-align:right">{c["euros"]:+.2f}</td></tr>'
        for c in explanation["contributions"]
    )
    return (
        '<table style="font-size:0.9em"><tr><th>feature</th><th>value</th><th>€</th></tr>'
        f'<tr><td>base value</td><td></td><td class="euros" style="text-align:right">'
        f"{explanation['base_value']:.2f}</td></tr>{rows}</table>"
    )


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:300]
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(f"{'.'.join(map(str, e.get('loc', [])[1:]))}: {e.get('msg')}" for e in detail)
    return str(detail)


def _error(text: str) -> str:
    return f'<div class="price-error" style="color:#b42318;font-size:1.1em">{escape(text)}</div>'
