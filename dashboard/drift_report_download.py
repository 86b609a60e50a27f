"""``GET /drift-report.html``: the file ``rentalstream drift-report --html`` writes, written
now and sent as a download.

The command runs in a child process, one at a time: the report reads the reference from
the model registry, and the dashboard process stays without MLflow (it would cost it
~190 MiB); the page's event loop waits for the child without blocking.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tornado.web import RequestHandler

from runtime.settings import Settings

log = logging.getLogger("rentalstream.dashboard")
TIMEOUT_SECONDS = 180.0


def command_environment(settings: Settings) -> Callable[[], dict[str, str]]:
    """What the handler is given: a function, not the settings, since Bokeh's server logs
    a handler's arguments at DEBUG and the settings' repr holds the database password."""
    return lambda: {
        **os.environ,
        "RENTALSTREAM_DATABASE_URL": settings.resolved_database_url(),
        "RENTALSTREAM_REGISTRY_TRACKING_URI": settings.resolved_mlflow_tracking_uri(),
        "COLUMNS": "1000",  # its error on one line: the line the page is told
    }


class DriftReportDownload(RequestHandler):
    one_at_a_time = asyncio.Lock()

    def initialize(self, environment: Callable[[], dict[str, str]]) -> None:
        self.environment = environment

    async def get(self) -> None:
        async with self.one_at_a_time:
            with tempfile.TemporaryDirectory(prefix="rentalstream-drift-report-") as folder:
                path = Path(folder) / "drift-report.html"
                error = await _write_report(self.environment(), path)
                if error is not None:
                    log.warning("drift report failed error=%s", error)
                    self.set_status(503)
                    self.set_header("Content-Type", "text/plain; charset=utf-8")
                    self.write(f"the drift report could not be written: {error}\n")
                    return
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.set_header("Content-Disposition", 'attachment; filename="drift-report.html"')
                self.write(path.read_bytes())


async def _write_report(env: dict[str, str], path: Path) -> str | None:
    """Run the command into ``path`` with ``env``; None when it did, else what went wrong, in a line."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rentalstream.cli",
        "drift-report",
        "--html",
        str(path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(child.communicate(), TIMEOUT_SECONDS)
    except TimeoutError:
        child.kill()
        await child.wait()
        return f"no report after {TIMEOUT_SECONDS:.0f} s"
    if child.returncode != 0 or not path.exists():
        lines = output.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {child.returncode}"
    return None
