"""The dashboard's drift-report download when the report cannot be written: a 503 that
says why (here, a registry with no champion), and the dashboard goes on. (The browser
test downloads a report that could be written.)"""

import time

import httpx
import pytest

from rentalstream import services
from rentalstream.processes import free_port
from tests.helpers import service_process

pytestmark = pytest.mark.e2e


def test_a_drift_report_that_cannot_be_written_is_a_503_saying_why(scorer_env, tmp_path):
    env = {
        **scorer_env,
        "RENTALSTREAM_DASHBOARD_PORT": str(free_port()),
        "RENTALSTREAM_REGISTRY_TRACKING_URI": f"sqlite:///{tmp_path / 'empty-registry.db'}",
    }
    url = f"http://127.0.0.1:{env['RENTALSTREAM_DASHBOARD_PORT']}"
    log = tmp_path / "dashboard.log"
    with service_process("dashboard", env, log) as process:
        services.wait_ready("dashboard", f"{url}/ready", process.pid, time.monotonic() + 120, str(log))
        answer = httpx.get(f"{url}/drift-report.html", timeout=180)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        assert "the drift report could not be written" in answer.text
        assert "has no 'champion' alias" in answer.text and "rentalstream train" in answer.text
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        assert process.poll() is None
