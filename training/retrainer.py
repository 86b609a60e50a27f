"""The retrainer: ``rentalstream retrainer``, run while ``RENTALSTREAM_RETRAIN=challenger``.

Every ``RENTALSTREAM_RETRAINER_POLL_SECONDS`` it reads the monitor's alerts
(``drift_events``, ``drift_signals``) and the retrains so far (``retrains``). When the
rules of ``training.retrain_policy`` say an alert is due, it claims it, then retrains
(``training.retrain``) and points ``@challenger`` at the new version.

Never twice: the claim is a row of ``retrains`` keyed by the alert's id, inserted with
the status ``running``. A second claim of that alert inserts nothing, and a partial
unique index lets only one row be ``running``, so neither a redelivered look nor a
second retrainer can start another. While a retrain runs it is visible there, in
``rentalstream retrains``, and as ``rentalstream_retrain_in_flight`` on ``/metrics``.
Its end is stored with it: ``registered`` (with the version, its run and its
cross-validated figures), ``skipped`` (too few labelled requests: nothing new to learn)
or ``failed``. A ``running`` row older than ``RENTALSTREAM_RETRAINER_MAX_SECONDS`` was
left by a retrainer that died; it is marked ``abandoned``.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from sqlalchemy import Engine, create_engine, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from runtime.datasets import DELAYS_XLSX, PRICING_CSV, dataset_path, read_delay_history
from runtime.settings import Settings
from schemas import tables
from schemas.events import utc_now
from training import retrain, retrain_policy
from training.features import read_pricing
from training.retrain_policy import Alert, Due
from training.train import train_and_register

log = logging.getLogger("rentalstream.retrainer")


@dataclass
class RetrainerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.in_flight = Gauge(
            "rentalstream_retrain_in_flight", "1 while a retrain set off by drift runs.", registry=self.registry
        )
        self.retrains = Counter(
            "rentalstream_retrains_total",
            "Retrains set off by drift, by how they ended.",
            ["status"],
            registry=self.registry,
        )


class Retrainer:
    """One ``look`` at a time: claim the due alert, if any, and retrain."""

    def __init__(self, settings: Settings, metrics: RetrainerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.engine: Engine = create_engine(settings.resolved_database_url(), pool_pre_ping=True)

    def look(self) -> dict | None:
        """Claim and run the due retrain, if any; its stored row, or None."""
        due = self.claim(utc_now())
        if due is None:
            return None
        self.metrics.in_flight.set(1)
        log.warning("retraining: %s on %s (alert %s)", due.reason, due.alert.signal, due.alert.alert_id)
        try:
            outcome = self.run_retrain(due)
        except retrain.NotEnoughLabels as short:
            outcome = {"status": "skipped", "detail": str(short)}
        except Exception as error:  # stored with the retrain; the next alert may try again
            log.exception("the retrain set off by %s failed", due.alert.alert_id)
            outcome = {"status": "failed", "detail": f"{type(error).__name__}: {error}"}
        finally:
            self.metrics.in_flight.set(0)
        outcome = {**outcome, "finished_at": utc_now()}
        with self.engine.begin() as conn:
            conn.execute(
                update(tables.retrains).where(tables.retrains.c.alert_id == due.alert.alert_id).values(outcome)
            )
        self.metrics.retrains.labels(outcome["status"]).inc()
        log.warning("retrain %s: %s %s", due.alert.alert_id, outcome["status"], outcome.get("detail") or "")
        return self.row(due.alert.alert_id)

    def run_retrain(self, due: Due) -> dict:
        """The retrain itself, on this service's settings: the outcome columns of its
        ``retrains`` row."""
        settings, conf = self.settings, self.settings.retrainer
        recent = retrain.labelled_requests(self.engine, conf.window)
        data = retrain.mixed_table(read_pricing(dataset_path(PRICING_CSV, settings.data_dir)), recent, conf)
        log.info("retraining on %d reference and %d recent labelled cars", data.reference_rows, data.recent_rows)
        trigger = {"alert_id": due.alert.alert_id, "signal": due.alert.signal, "reason": due.reason}
        result = train_and_register(
            data.table,
            read_delay_history(dataset_path(DELAYS_XLSX, settings.data_dir)),
            tracking_uri=settings.resolved_mlflow_tracking_uri(),
            experiment_name=settings.registry.experiment_name,
            model_name=settings.registry.model_name,
            champion_alias=settings.registry.champion_alias,
            challenger_alias=settings.registry.challenger_alias,
            artifact_location=settings.mlflow_artifact_root(),
            weights=data.weights,
            protocol=retrain.RETRAIN_PROTOCOL,
            run_tags=retrain.run_tags(data, trigger),
            # Compiled here, once, rather than by each scorer that meets the challenger.
            compiled_trees_dir=settings.scorer.model_cache_dir.expanduser() if settings.scorer.compile_model else None,
        )
        figures = result.candidates[0].mean()
        return {
            "status": "registered",
            "reference_rows": data.reference_rows,
            "recent_rows": data.recent_rows,
            "model_version": result.registered_version,
            "run_id": result.run_id,
            "cv_mae": figures["cv_mae_mean"],
            "cv_rmse": figures["cv_rmse_mean"],
        }

    def claim(self, now: datetime) -> Due | None:
        """The due alert, claimed as a ``running`` retrain; None when nothing is due, a
        retrain is in flight or cooling down, or another retrainer claimed it first."""
        conf = self.settings.retrainer
        r = tables.retrains
        with self.engine.begin() as conn:
            conn.execute(
                update(r)
                .where(r.c.status == "running", r.c.started_at < now - timedelta(seconds=conf.max_seconds))
                .values(status="abandoned", finished_at=now, detail="still running after max_seconds")
            )
            in_flight = conn.execute(select(func.count()).where(r.c.status == "running")).scalar_one() > 0
            last_start = conn.execute(select(func.max(r.c.started_at))).scalar_one()
            registered = conn.execute(
                select(r.c.finished_at, r.c.model_version)
                .where(r.c.status == "registered")
                .order_by(r.c.finished_at.desc().nulls_last())
                .limit(1)
            ).first()
            last_registered = registered.finished_at if registered is not None else None
            cooldown = timedelta(seconds=conf.cooldown_seconds)
            due = retrain_policy.first_due(
                self._alerts(conn, last_start),
                now=now,
                sustain=timedelta(seconds=conf.sustain_seconds),
                last_start=last_start,
                in_flight=in_flight,
                last_registered=last_registered,
                cooldown=cooldown,
                # The scan for weighed prices only matters, and so only runs, in a cooldown.
                weighed=retrain_policy.cooling_down(now, last_registered, cooldown)
                and self._weighed(conn, registered.model_version),
            )
        if due is None:
            return None
        try:
            with self.engine.begin() as conn:
                claimed = conn.execute(
                    insert(r)
                    .values(
                        alert_id=due.alert.alert_id,
                        signal=due.alert.signal,
                        reason=due.reason,
                        status="running",
                        started_at=now,
                        recent_share=conf.recent_share,
                    )
                    .on_conflict_do_nothing(index_elements=["alert_id"])
                ).rowcount
        except IntegrityError:  # another retrain went running first (the partial unique index)
            return None
        return due if claimed else None

    def row(self, alert_id: str) -> dict:
        with self.engine.connect() as conn:
            return dict(
                conn.execute(select(tables.retrains).where(tables.retrains.c.alert_id == alert_id)).mappings().one()
            )

    def _weighed(self, conn, version: str) -> bool:
        """Whether challenger ``version`` has priced ``weighed_prices`` requests whose true
        price came back (asked only during a cooldown; the scan stops once it has them)."""
        p = tables.prices
        needed = self.settings.retrainer.weighed_prices
        labelled = (
            select(p.c.price_id)
            .where(
                p.c.challenger_model_version == version,
                p.c.challenger_price_per_day.isnot(None),
                p.c.listed_price_per_day.isnot(None),
            )
            .limit(needed)
            .subquery()
        )
        return conn.execute(select(func.count()).select_from(labelled)).scalar_one() >= needed

    def _alerts(self, conn, since: datetime | None) -> list[Alert]:
        events, signals = tables.drift_events, tables.drift_signals
        query = (
            select(
                events.c.alert_id,
                events.c.signal,
                events.c.state,
                events.c.detected_at,
                signals.c.state.label("signal_state"),
                signals.c.last_alert_id,
            )
            .join(signals, signals.c.signal == events.c.signal)
            .where(events.c.state == "drifting")
        )
        if since is not None:
            query = query.where(events.c.detected_at > since)
        return [
            Alert(r.alert_id, r.signal, r.state, r.detected_at, r.signal_state, r.last_alert_id)
            for r in conn.execute(query)
        ]


def build_app(settings: Settings, retrainer: Retrainer | None = None) -> FastAPI:
    """``/health``, ``/ready`` (the database answers) and ``/metrics``, with the looks
    running in the background from start to stop."""
    metrics = retrainer.metrics if retrainer else RetrainerMetrics()
    retrainer = retrainer or Retrainer(settings, metrics)

    async def keep_looking() -> None:
        while True:
            try:
                await asyncio.to_thread(retrainer.look)
            except Exception:  # the database away, say: the next look tries again
                log.exception("could not look at the drift alerts")
            await asyncio.sleep(settings.retrainer.poll_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        looking = asyncio.create_task(keep_looking(), name="retrainer")
        yield
        looking.cancel()
        await asyncio.gather(looking, return_exceptions=True)
        retrainer.engine.dispose()

    app = FastAPI(title="rentalstream retrainer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> Response:
        try:
            with retrainer.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return Response("not ready: the database does not answer", status_code=503)
        return Response("ready")

    @app.get("/metrics")
    def metrics_page() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(settings: Settings) -> None:
    """Run the retrainer until SIGTERM/SIGINT. A retrain in hand finishes first; if the
    process is killed instead, its row stays ``running`` until ``max_seconds`` mark it
    abandoned."""
    conf = settings.retrainer
    uvicorn.run(build_app(settings), host=conf.host, port=conf.port, log_level="warning")
