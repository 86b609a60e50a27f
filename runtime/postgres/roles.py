"""Roles of least privilege, one per kind of client (`rentalstream db roles`).

- ``rentalstream_migrator`` owns the tables: ``db upgrade`` runs as it.
- ``rentalstream_scorer`` reads and writes the scorer's results (cars, rentals, prices,
  price requests, delays) and dead letters.
- ``rentalstream_monitor`` reads and writes the drift tables and dead letters.
- ``rentalstream_retrainer`` reads the labelled price requests and the drift tables,
  and writes the retrains (``training.retrainer``).
- ``rentalstream_reader`` reads every table: the dashboard, ``compare``, ``drift-report``
  and ``export``.

Only the migrator may create, alter, drop or truncate; no role may delete a row. The
roles are created by a role that may create roles (the server's admin), which also hands
the tables to the migrator; ``db upgrade`` grants again on the tables it creates.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.engine import make_url

from runtime.settings import normalised_database_url
from schemas import tables

MIGRATOR = "rentalstream_migrator"
SCORER = "rentalstream_scorer"
MONITOR = "rentalstream_monitor"
RETRAINER = "rentalstream_retrainer"
READER = "rentalstream_reader"
WRITES = {
    SCORER: (tables.cars, tables.rentals, tables.prices, tables.price_requests, tables.delays, tables.dead_letters),
    MONITOR: (tables.drift_events, tables.drift_signals, tables.dead_letters),
    RETRAINER: (tables.retrains,),
}
READS = {RETRAINER: (tables.prices, tables.price_requests, tables.drift_events, tables.drift_signals)}
ROLES = (MIGRATOR, SCORER, MONITOR, RETRAINER, READER)
OF_SERVICE = {
    "scorer": SCORER,
    "monitor": MONITOR,
    "retrainer": RETRAINER,
    "dashboard": READER,
}  # the bridge has no database
WRITE_PRIVILEGES = "SELECT, INSERT, UPDATE"  # upserts: INSERT … ON CONFLICT DO UPDATE, which reads the row


def read_passwords(folder: Path) -> dict[str, str]:
    """The roles' passwords in ``folder``, a file per role named after it, as compose hands
    its secrets over (``/run/secrets``); a role without a file gets none set."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder of role passwords at {folder}")
    passwords = {}
    for role in ROLES:
        path = folder / role
        if path.exists():
            passwords[role] = path.read_text().removesuffix("\n")
    return passwords


def create_roles(admin_url: str, passwords: Mapping[str, str] | None = None) -> list[str]:
    """Create the missing roles (able to log in; with ``passwords[role]`` when given),
    give the migrator the schema and the tables, grant each role its rights; return the
    roles created now. Run as a role that may create roles and owns (or is) the tables'
    owner. Idempotent."""
    passwords = passwords or {}
    unknown = set(passwords) - set(ROLES)
    if unknown:
        raise ValueError(f"no such role: {', '.join(sorted(unknown))} (the roles are {', '.join(ROLES)})")
    engine = create_engine(normalised_database_url(admin_url))
    try:
        with engine.begin() as conn:
            existing = set(existing_roles(conn))
            created = [role for role in ROLES if role not in existing]
            for role in created:
                _execute_formatted(conn, "CREATE ROLE %I LOGIN", role)
            for role, password in passwords.items():
                _execute_formatted(conn, "ALTER ROLE %I PASSWORD %L", role, password)
            database = conn.execute(text("SELECT current_database()")).scalar_one()
            _execute_formatted(conn, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            _execute_formatted(conn, "GRANT USAGE, CREATE ON SCHEMA public TO %I", MIGRATOR)
            for role in ROLES:
                _execute_formatted(conn, "GRANT CONNECT ON DATABASE %I TO %I", database, role)
                _execute_formatted(conn, "GRANT USAGE ON SCHEMA public TO %I", role)
            for table in present_tables(conn):
                _execute_formatted(conn, "ALTER TABLE %I OWNER TO %I", table, MIGRATOR)
            grant_privileges(conn)
    finally:
        engine.dispose()
    return created


def grant_privileges(conn: Connection) -> None:
    """Each role's rights on each table present, and nothing else (on tables that are
    ``schemas.tables``')."""
    for table in present_tables(conn):
        _execute_formatted(
            conn, "REVOKE ALL ON TABLE %I FROM %I, %I, %I, %I", table, SCORER, MONITOR, RETRAINER, READER
        )
        _execute_formatted(conn, "GRANT SELECT ON TABLE %I TO %I", table, READER)
        for role, read in READS.items():
            if table in {t.name for t in read}:
                _execute_formatted(conn, "GRANT SELECT ON TABLE %I TO %I", table, role)
        for role, written in WRITES.items():
            if table in {t.name for t in written}:
                _execute_formatted(conn, f"GRANT {WRITE_PRIVILEGES} ON TABLE %I TO %I", table, role)


def role_url(database_url: str, role: str, password: str | None = None) -> str:
    """``database_url`` as ``role`` (with ``password``, else none)."""
    url = make_url(normalised_database_url(database_url)).set(username=role, password=password)
    return url.render_as_string(hide_password=False)


def existing_roles(conn: Connection) -> list[str]:
    found = conn.execute(text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:names)"), {"names": list(ROLES)})
    return sorted(found.scalars())


def present_tables(conn: Connection) -> list[str]:
    present = set(inspect(conn).get_table_names())
    return [table.name for table in tables.metadata.sorted_tables if table.name in present]


def _execute_formatted(conn: Connection, statement: str, *values: str) -> None:
    """A statement that takes no bind parameters (DDL, GRANT), with identifiers (``%I``)
    and literals (``%L``) quoted by PostgreSQL's own ``format()``."""
    if values:
        placeholders = ", ".join(f"CAST(:v{i} AS text)" for i in range(len(values)))
        statement = conn.execute(
            text(f"SELECT format(CAST(:statement AS text), {placeholders})"),
            {"statement": statement, **{f"v{i}": value for i, value in enumerate(values)}},
        ).scalar_one()
    # On the driver's connection (same transaction), where a colon or a percent sign in a
    # password is text, not a parameter.
    conn.connection.driver_connection.execute(statement)
