"""The long-running services of the local stack (scorer, bridge, monitor, dashboard, and
the retrainer while ``RENTALSTREAM_RETRAIN=challenger``), run as background
processes by ``rentalstream up`` / ``demo`` and stopped by ``down``.

Each one is the same command a user can run in the foreground (``rentalstream scorer``),
started in its own session with its log in ``<home>/logs/<name>.log``; its pid and URL
are recorded in ``<home>/stack.json`` next to the embedded pieces. A service counts as
started once its ``/ready`` answers 200.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from rentalstream import processes
from runtime.postgres import roles
from runtime.settings import Settings
from runtime.stack_state import BackgroundService, StackState


@dataclass(frozen=True)
class Service:
    """A service by its name, which is also the name of its settings group (host, port)."""

    name: str

    @property
    def port_variable(self) -> str:
        return f"RENTALSTREAM_{self.name.upper()}_PORT"

    def listens_on(self, settings: Settings) -> tuple[str, int]:
        group = getattr(settings, self.name)
        return group.host, group.port

    def url(self, settings: Settings) -> str:
        """Its URL from the machine it runs on (a service bound to every interface answers on loopback)."""
        host, port = self.listens_on(settings)
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{port}"


SCORER = Service("scorer")
BRIDGE = Service("bridge")
MONITOR = Service("monitor")
DASHBOARD = Service("dashboard")
RETRAINER = Service("retrainer")  # only while RENTALSTREAM_RETRAIN=challenger
ALL = (SCORER, BRIDGE, MONITOR, DASHBOARD)
BY_NAME = {service.name: service for service in (*ALL, RETRAINER)}


def of_stack(settings: Settings) -> tuple[Service, ...]:
    """The services ``rentalstream up`` runs with these settings."""
    return (*ALL, RETRAINER) if settings.retrain == "challenger" else ALL


class ServiceFailed(RuntimeError):
    pass


def ensure_services(settings: Settings, services=ALL, timeout: float = 180) -> list[str]:
    """Start every service of ``services`` that is not already running, wait until all are
    ready, and return the names of those started now."""
    state = settings.stack or StackState()
    running = state.services
    started = []
    for service in services:
        known = running.get(service.name)
        if known and processes.alive(known.pid):
            continue
        running[service.name] = spawn(settings, service)
        started.append(service)
        settings.record_stack(state)
    deadline = time.monotonic() + timeout
    try:
        for service in started:
            known = running[service.name]
            wait_ready(service.name, f"{known.url}/ready", known.pid, deadline, known.log)
    except BaseException:
        stop_services(settings, [service.name for service in started])  # leave nothing half-started
        raise
    return [service.name for service in started]


def stop_services(settings: Settings, names: list[str] | None = None) -> list[str]:
    """SIGTERM the recorded services (all, or ``names``): each finishes its batch or its
    requests and exits; then forget them."""
    state = settings.stack
    if state is None:
        return []
    stopped = []
    for name in list(state.services if names is None else names):
        service = state.services.pop(name, None)
        if service and processes.alive(service.pid):
            processes.stop_pid(service.pid, timeout=30)
            stopped.append(name)
    settings.record_stack(state)
    return stopped


def spawn(
    settings: Settings, service: Service, instance: str | None = None, port: int | None = None
) -> BackgroundService:
    """Start ``service`` in the background; ``instance`` names its log (another replica of
    a service needs its own name and ``port``). Returns its pid, URL and log path."""
    logs = settings.home.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{instance or service.name}.log"
    env = os.environ.copy()
    if service.name in roles.OF_SERVICE and embedded_database(settings):
        # The embedded stack's services run as roles of least privilege (runtime/postgres/roles.py).
        env["RENTALSTREAM_DATABASE_URL"] = roles.role_url(
            settings.resolved_database_url(), roles.OF_SERVICE[service.name]
        )
    if port is not None:
        env[service.port_variable] = str(port)
        group = getattr(settings, service.name).model_copy(update={"port": port})
        settings = settings.model_copy(update={service.name: group})
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rentalstream.cli", service.name],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    return BackgroundService(pid=process.pid, url=service.url(settings), log=str(log_path))


def embedded_database(settings: Settings) -> bool:
    """Whether the database is the embedded stack's (which trusts 127.0.0.1, so its roles
    need no password), not one configured by RENTALSTREAM_DATABASE_URL."""
    return not settings.database.url and settings.stack is not None and settings.stack.postgres is not None


def wait_ready(name: str, url: str, pid: int, deadline: float, log: str | None = None) -> None:
    """Poll ``url`` until it answers 200; raise ServiceFailed (with the log's tail) if the
    process exits first or ``deadline`` (time.monotonic) passes."""
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        if not processes.alive(pid):
            raise ServiceFailed(f"the {name} exited at start; its log:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise ServiceFailed(f"the {name} was not ready in time; its log:\n{_tail(log)}")
        time.sleep(0.25)


def _tail(path: str | None, size: int = 3000) -> str:
    if path is None:
        return "(on the terminal)"
    text = Path(path).read_text(errors="replace") if Path(path).exists() else ""
    return text[-size:]
