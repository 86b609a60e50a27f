"""The baseline: the architecture of a plain model API, for side-by-side benchmarks.

    python benchmarks/plain_model_api.py --port 8099

One FastAPI process that loads the same champion from the same registry and, per
request, validates the car with the same contract and calls the model (and its error
estimator, for the same answer as the bridge's) in-process:

- ``POST /predict``: model only, nothing stored;
- ``POST /predict-and-store``: the model, then one INSERT of the answer into
  ``prices`` (what it takes for such an API to keep a request log).

It reads the same ``RENTALSTREAM_*`` settings as the product.
"""

from __future__ import annotations

import argparse
import uuid
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from sqlalchemy.dialects.postgresql import insert

from runtime.postgres.engines import async_engine
from runtime.prepared_versions import prepare
from runtime.registry import Registry
from runtime.settings import Settings
from schemas import tables
from schemas.cars import CarFeatures
from schemas.events import utc_now
from schemas.predict import PricedCar
from scorer.pricing import PriceModel
from scorer.scoring import estimated_errors


def build_app(settings: Settings) -> FastAPI:
    registry = Registry.of(settings)
    version = registry.champion(settings.registry.champion_alias)
    cache = settings.scorer.model_cache_dir.expanduser()
    model = PriceModel.load(registry.model_name, prepare(registry, version, cache, compiled=False))  # the booster
    engine = async_engine(settings.resolved_database_url())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await engine.dispose()

    app = FastAPI(title="plain model API (baseline)", lifespan=lifespan)

    def answer(car: CarFeatures) -> PricedCar:
        price = model.price_per_day([car])[0]
        lower, upper = model.interval.around(price) if model.interval else (None, None)
        [estimated_error] = estimated_errors(model, [car], [price])
        return PricedCar(
            request_id=uuid.uuid4().hex,
            price_per_day=price,
            price_lower=lower,
            price_upper=upper,
            estimated_error=estimated_error,
            model_name=model.name,
            model_version=model.version,
            unknown_fields=car.unknown_fields,
        )

    @app.post("/predict")
    async def predict(car: CarFeatures) -> PricedCar:
        return answer(car)

    @app.post("/predict-and-store")
    async def predict_and_store(car: CarFeatures) -> PricedCar:
        priced = answer(car)
        now = utc_now()
        async with engine.begin() as conn:
            await conn.execute(
                insert(tables.prices).values(
                    price_id=priced.request_id,
                    request_id=priced.request_id,
                    price_per_day=priced.price_per_day,
                    unknown_fields=priced.unknown_fields,
                    model_name=priced.model_name,
                    model_version=priced.model_version,
                    event_time=now,
                    scored_at=now,
                )
            )
        return priced

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"model_version": model.version}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(Settings()), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
