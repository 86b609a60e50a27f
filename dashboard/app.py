"""The Panel dashboard: ``rentalstream dashboard`` (and ``up`` / ``demo``).

One process serves every page: a ``LiveFeed`` follows the result topics and Postgres
(``dashboard.feed``); each page (``dashboard.page``) redraws from the feed's snapshot
every ``dashboard_refresh_seconds``. Besides the page at ``/`` it serves ``/health``,
``/ready`` (seeded from Postgres and holding partitions), ``/metrics`` and
``/drift-report.html`` (``dashboard.drift_report_download``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import panel as pn
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from tornado.web import RequestHandler

from dashboard.drift_report_download import DriftReportDownload, command_environment
from dashboard.feed import LiveFeed, own_group
from dashboard.metrics import DashboardMetrics
from dashboard.model_importance import ModelImportance
from dashboard.page import build_page
from runtime import tracing
from runtime.kafka.security import client_options
from runtime.postgres.engines import async_engine
from runtime.registry_process import RegistryProcess
from runtime.settings import Settings

log = logging.getLogger("rentalstream.dashboard")
FEED_RETRY_SECONDS = 2.0


def serve(settings: Settings) -> None:
    """Serve the dashboard until SIGTERM/SIGINT."""
    tracing.configure("rentalstream-dashboard")
    metrics = DashboardMetrics()
    engine = async_engine(settings.resolved_database_url(), pool_size=2)
    feed = LiveFeed(
        settings.resolved_kafka_bootstrap(),
        engine,
        group_id=own_group(settings.dashboard.group_id),
        buffer_rows=settings.dashboard.buffer_rows,
        aggregate_seconds=settings.dashboard.aggregate_seconds,
        metrics=metrics,
        security=client_options(settings.kafka),
    )
    importance = ModelImportance(RegistryProcess.of(settings), settings.registry.champion_alias)
    address = f"{settings.dashboard.host}:{settings.dashboard.port}"
    server = pn.serve(
        {"/": lambda: build_page(feed, settings, metrics, importance)},
        address=settings.dashboard.host,
        port=settings.dashboard.port,
        show=False,
        start=False,
        websocket_origin=[address, f"localhost:{settings.dashboard.port}", *settings.dashboard.websocket_origins],
        title="rentalstream",
        admin=False,
        extra_patterns=[
            ("/health", _Answer, {"check": lambda: True}),
            ("/ready", _Answer, {"check": lambda: feed.ready}),
            ("/metrics", _Metrics, {"metrics": metrics}),
            ("/drift-report.html", DriftReportDownload, {"environment": command_environment(settings)}),
        ],
    )
    # Tornado logs every 5xx at ERROR, and /ready answers 503 until the feed holds its partitions.
    logging.getLogger("tornado.access").setLevel(logging.CRITICAL)
    loop = server.io_loop.asyncio_loop
    following = loop.create_task(_follow(feed))

    async def stop() -> None:
        """Stop the feed (its consumer leaves the group), then the server, then the loop."""
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        server.stop()
        await engine.dispose()
        await importance.registry.close()
        await tracing.shutdown_async()
        server.io_loop.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(stop()))
    server.start()
    log.info("dashboard serving url=http://%s/", address)
    server.io_loop.start()


async def _follow(feed: LiveFeed) -> None:
    """Keep the feed running: a broker or database that is away at start, or goes away,
    is retried, while the pages keep showing what they have."""
    while True:
        try:
            await feed.run()
        except asyncio.CancelledError:
            raise
        except (KafkaError, SQLAlchemyError, OSError) as error:
            log.warning(
                "live feed stopped error=%s; retrying in %.0f s", str(error).splitlines()[0], FEED_RETRY_SECONDS
            )
            await asyncio.sleep(FEED_RETRY_SECONDS)


class _Answer(RequestHandler):
    def initialize(self, check: Callable[[], bool]) -> None:
        self.check = check

    def get(self) -> None:
        ok = self.check()
        self.set_status(200 if ok else 503)
        self.write("ok" if ok else "not ready")


class _Metrics(RequestHandler):
    def initialize(self, metrics: DashboardMetrics) -> None:
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.metrics.registry))
