"""The HTTP ``/predict`` bridge: a thin FastAPI front over the scorer.

It does no scoring: each car of a request becomes a ``PriceRequest`` on
``price-requests`` with a reply topic, and the answer is the scorer's reply (see
``runtime/kafka/request_reply.py``). The scorer stores every request and its answer,
so the request log is plain SQL (``price_requests`` joined to ``prices``).

Errors: 401 without the right ``X-API-Key`` (when keys are set: ``producers/bridge_clients.py``),
429 with Retry-After past the client's request rate limit,
413 past ``RENTALSTREAM_BRIDGE_MAX_BODY_BYTES``, 415 for a body not sent as JSON, 422 with
the field and the reason (or why the body is not JSON: ``producers/bridge_body.py``),
503 when the broker does not take the request or ``RENTALSTREAM_BRIDGE_MAX_IN_FLIGHT``
price requests (one per car) are already waiting for the scorer (refused at once, with Retry-After), 504 with the request id when the
scorer does not answer within ``RENTALSTREAM_BRIDGE_TIMEOUT_SECONDS``, 502 when
``explain=true`` and the scorer priced the cars but could not explain them.
"""

# No `from __future__ import annotations`: FastAPI must see the body type built at runtime.
import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Query, Request, Response, Security
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from producers.bridge_body import StrictJsonRoute
from producers.bridge_clients import ANONYMOUS, SHARED, Client, Clients
from producers.bridge_limits import AnswerOversizedBodies
from producers.bridge_metrics import BridgeMetrics, TimeResponses
from producers.bridge_split import arm
from runtime import tracing
from runtime.kafka.request_reply import BrokerUnavailable, PriceRequester, ReplyTimeout
from runtime.kafka.security import client_options
from runtime.long_lived import freeze_what_is_loaded
from runtime.model_slot import ModelSlot, follow
from runtime.registry_process import RegistryProcess
from runtime.settings import Settings
from schemas.events import PriceScored
from schemas.predict import (
    IN_POSITIONAL_ORDER,
    OPENAPI_EXAMPLES,
    ErrorReply,
    PositionalPrediction,
    PositionalRequest,
    PricedCar,
    cars_of,
    predict_body,
)
from schemas.text import NO_CONTROL_CHARACTERS
from schemas.topics import PRICE_REPLIES, PRICE_REQUESTS

log = logging.getLogger("rentalstream.bridge")

DESCRIPTION = f"""
Prices cars with the champion model of the MLflow registry, through Kafka: each car is
published on `price-requests` and the scorer's reply is returned.

`POST /predict` takes one of three bodies:

* **one car** with named fields → one answer with `price_per_day`, the model name and
  version, the request id and `unknown_fields` (values the model has never seen);
* **a list of cars** → a list of such answers, in order;
* **the positional form** of the original Getaround API, `{{"input": [[...], ...]}}`,
  each inner list holding one car's values {IN_POSITIONAL_ORDER} → `{{"prediction": [...]}}`.

`?explain=true` also says why each price: the model's base value (its average price) plus
one contribution per feature, in euros, largest first, summing to the price to the cent
(`explanation`, or `explanations` beside `prediction`). The trees' exact contributions
cost the scorer ~10 ms per car, so they come only when asked.

A share of clients (`RENTALSTREAM_BRIDGE_CHALLENGER_SHARE`, sticky per client: the key's
client, else `X-Client-Id`, else the address) gets the challenger's price while a
challenger is set; `model_version` always names the version that priced the car.

Every response carries an `X-Request-Id` header; a 504 names it in its body too.
"""


def build_app(settings: Settings) -> FastAPI:
    """The bridge app; Kafka is connected in its lifespan (so at server start)."""
    metrics = BridgeMetrics(pending=lambda: requester.pending, tasks=lambda: len(asyncio.all_tasks()))
    requester = PriceRequester(
        settings.resolved_kafka_bootstrap(),
        PRICE_REQUESTS.name,
        PRICE_REPLIES.name,
        settings.kafka.request_fetch_max_wait_ms,
        on_late_reply=metrics.late_replies.inc,
        security=client_options(settings.kafka),
    )
    registry = RegistryProcess.of(settings)  # MLflow stays in that child process
    alias = settings.registry.champion_alias
    champion = ModelSlot(alias, lambda: registry.version_behind(alias))  # the version alone: nothing to load

    async def watch_champion() -> None:
        """Know which version is the champion, for /ready (a bridge without one can only time out)."""
        try:
            await champion.refresh()
        except Exception:  # the registry may be down for a while; follow() tries again
            log.exception("registry lookup failed")
        await follow([champion], lambda: settings.registry.poll_seconds if champion.version else 2)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await requester.start()
        freeze_what_is_loaded()  # the libraries and the app: out of every later collection
        watcher = asyncio.create_task(watch_champion(), name="bridge-champion")
        try:
            yield
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await registry.close()
            await requester.stop()
            await tracing.shutdown_async()  # the last spans, before uvicorn ends the process

    app = FastAPI(
        title="rentalstream price bridge",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.router.route_class = StrictJsonRoute  # the routes below read strict JSON bodies only
    app.add_middleware(AnswerOversizedBodies, max_bytes=settings.bridge.max_body_bytes)
    app.add_middleware(TimeResponses, metrics=metrics)
    if tracing.recording():
        # The server span of each request (continuing the caller's traceparent, if any); the
        # probes and /metrics stay out of the traces. Loaded only when traces are kept.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="health,ready,metrics")

    bridge = settings.bridge
    clients = Clients(
        bridge.api_keys_file, bridge.api_key.get_secret_value() if bridge.api_key else None, bridge.rate_limit
    )
    admit = admission(clients)
    PredictBody = predict_body(settings.bridge.max_cars)

    @app.post(
        "/predict",
        response_model=PricedCar | list[PricedCar] | PositionalPrediction,
        responses={
            401: {"model": ErrorReply, "description": "Missing or wrong X-API-Key"},
            429: {"description": "Over the client's request rate limit; Retry-After says when to ask again"},
            413: {"description": "Body larger than the configured limit"},
            415: {"description": "The body is not sent as JSON (Content-Type: application/json)"},
            503: {
                "model": ErrorReply,
                "description": "The broker did not take the request, the bridge is not ready, "
                "or RENTALSTREAM_BRIDGE_MAX_IN_FLIGHT price requests are already waiting (with Retry-After)",
            },
            502: {"model": ErrorReply, "description": "explain=true, and the scorer could not explain the prices"},
            504: {"model": ErrorReply, "description": "No reply from the scorer in time; names the request id"},
        },
        response_model_exclude_unset=True,
        max_body_size=settings.bridge.max_body_bytes,
    )
    async def predict(
        request: Request,
        response: Response,
        body: Annotated[PredictBody, Body(openapi_examples=OPENAPI_EXAMPLES)],
        caller: Annotated[Client, Depends(admit)],
        x_client_id: Annotated[
            str | None,
            Header(max_length=128, pattern=NO_CONTROL_CHARACTERS, description="Who asks (for the request log)"),
        ] = None,
        explain: Annotated[
            bool,
            Query(
                description="Also say why each price: the model's base value plus one contribution per feature, "
                "in euros, summing to the price. Costs the scorer ~10 ms per car."
            ),
        ] = False,
    ):
        """Price one car, a list of cars, or positional rows (see the description above)."""
        request_id = requester.new_request_id()
        if tracing.recording():
            trace.get_current_span().set_attribute("rentalstream.request_id", request_id)
        if not requester.listening:
            return error(503, "not ready: the reply consumer is not reading yet", request_id)
        if requester.pending >= settings.bridge.max_in_flight:
            # Refuse at once rather than queue without bound behind a slow scorer. (No
            # await until ``ask`` registers this request's cars, so no race past the check.)
            refused = error(
                503,
                f"overloaded: {requester.pending} price requests already waiting for the scorer; retry shortly",
                request_id,
            )
            refused.headers["Retry-After"] = "1"
            return refused
        # Who asks, in the request log: the key's client (a key of the keys file names one), else
        # what the caller says, else its address.
        if clients.need_key and caller.name != SHARED:
            client = caller.name
        else:
            client = x_client_id or (request.client.host if request.client else None)
        answer_with = arm(client, settings.bridge.challenger_share) if client else "champion"
        try:
            replies = await requester.ask(
                cars_of(body),
                request_id,
                client,
                settings.bridge.timeout_seconds,
                explain=explain,
                answer_with=answer_with,
            )
        except BrokerUnavailable as failure:
            log.warning("request %s: %s", request_id, failure)
            return error(503, "the message broker is unreachable", request_id)
        except ReplyTimeout as failure:
            log.warning("request %s: %s", request_id, failure)
            return error(504, str(failure), request_id)
        metrics.cars_priced.inc(len(replies))
        for reply in replies:
            metrics.answers.labels(reply.answer().model_version).inc()
        if explain and any(r.explanation is None for r in replies):
            return error(502, "the scorer priced the cars but could not explain the prices (see its log)", request_id)
        response.headers["X-Request-Id"] = request_id
        if isinstance(body, PositionalRequest):
            prediction = PositionalPrediction(prediction=[r.answer().price_per_day for r in replies])
            if explain:  # only then: the original API's answer is {"prediction": [...]} alone
                prediction.explanations = [r.explanation for r in replies]
            return prediction
        answers = [priced_car(r) for r in replies]
        return answers if isinstance(body, list) else answers[0]

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready", summary="Readiness: broker connected, reply consumer reading, a champion model exists")
    async def ready() -> JSONResponse:
        broker = await requester.broker_answers()
        state = {
            "broker": broker,
            "reply_consumer": requester.listening,
            "champion_version": champion.version,
            "last_reply_model": "v".join(requester.last_model) if requester.last_model else None,
            "pending_replies": requester.pending,
        }
        is_ready = broker and requester.listening and champion.version is not None
        return JSONResponse({"ready": is_ready, **state}, status_code=200 if is_ready else 503)

    return app


def admission(clients: Clients):
    """The dependency that lets a /predict in: its key's client (401 without one, when keys
    are set), within the client's rate limit (429 with Retry-After past it)."""
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Required when the bridge has API keys")

    async def admit(request: Request, key: Annotated[str | None, Security(header)]) -> Client:
        if clients.need_key:
            client = clients.client_of(key)
            if client is None:
                raise HTTPException(401, "missing or wrong X-API-Key", headers={"WWW-Authenticate": "APIKey"})
            caller = client.name
        else:
            client = Client(ANONYMOUS, None)
            caller = request.client.host if request.client else ANONYMOUS
        request.state.client = client.name  # for the per-client metrics
        wait = clients.retry_after(client, caller)
        if wait is not None:
            raise HTTPException(
                429,
                f"over the request rate limit of {client.name}; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        return client

    return admit


def priced_car(reply: PriceScored) -> PricedCar:
    """The answer to one car: the champion's price, or the challenger's for a caller in
    the live split (``producers/bridge_split.py``), naming the version that priced it."""
    answer = reply.answer()
    return PricedCar(
        request_id=reply.request_id or reply.price_id,
        price_per_day=answer.price_per_day,
        price_lower=answer.price_lower,
        price_upper=answer.price_upper,
        estimated_error=answer.estimated_error,
        model_name=reply.model_name,
        model_version=answer.model_version,
        unknown_fields=reply.unknown_fields,
        # only when asked: an answer without one has no explanation key (response_model_exclude_unset)
        **({"explanation": reply.explanation} if reply.explanation is not None else {}),
    )


def error(status: int, detail: str, request_id: str) -> JSONResponse:
    return JSONResponse(
        ErrorReply(detail=detail, request_id=request_id).model_dump(),
        status_code=status,
        headers={"X-Request-Id": request_id},
    )


def serve(settings: Settings) -> None:
    """Run the bridge until SIGTERM/SIGINT (in-flight requests finish first)."""
    import uvicorn

    tracing.configure("rentalstream-bridge")
    uvicorn.run(
        build_app(settings),
        host=settings.bridge.host,
        port=settings.bridge.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
