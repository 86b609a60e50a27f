"""Small helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

# A valid car as a client would send it: field names of CarFeatures, training spellings.
SAMPLE_CAR = {
    "model_key": "Renault", "mileage": 120_000, "engine_power": 110, "fuel": "diesel",
    "paint_color": "grey", "car_type": "estate",
}  # fmt: skip



def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            pytest.fail(f"process exited ({process.returncode}) while waiting for {what}\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail}")
        time.sleep(0.2)
