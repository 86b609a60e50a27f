"""Least privilege on a real PostgreSQL: `rentalstream db roles` makes a role per kind of
client, and each is refused outside its rights. What each may do is written out here, from
the issue's rule (the scorer and the monitor write only their tables, the dashboard and
`compare` only read, the migration role alone changes the schema), not read from the code.

Whether a right is held is asked with statements the server checks before touching a row:
a statement without the right is refused with 42501 (insufficient privilege) even when
it would change no row, so ``INSERT … SELECT … WHERE false``, ``UPDATE``/``DELETE …
WHERE false`` ask without changing anything. The services themselves run as these roles in every
test that starts them (tests/conftest.py), so a right they lack fails those tests too.
"""

import os

import psycopg
import pytest
from psycopg import errors
from sqlalchemy.engine import make_url

from runtime.postgres import engines, roles
from tests.helpers import run_cli

pytestmark = pytest.mark.integration
TABLES = {
    "cars",
    "rentals",
    "prices",
    "price_requests",
    "delays",
    "dead_letters",
    "drift_events",
    "drift_signals",
    "retrains",
}
WRITES = {
    "rentalstream_scorer": {"cars", "rentals", "prices", "price_requests", "delays", "dead_letters"},
    "rentalstream_monitor": {"drift_events", "drift_signals", "dead_letters"},
    "rentalstream_retrainer": {"retrains"},
    "rentalstream_reader": set(),
}
# Besides what it writes: the labelled requests it learns from and the alerts it answers.
READS = {"rentalstream_retrainer": {"prices", "price_requests", "drift_events", "drift_signals"}}
TRICKY_PASSWORD = "a:b%c'd\"e@:name"  # quotes, a colon-name and a percent sign, as text


def connect(url: str, role: str) -> psycopg.Connection:
    # The embedded server trusts 127.0.0.1: the role is who connects, whatever the password.
    as_role = roles.role_url(url, role).replace("postgresql+psycopg://", "postgresql://", 1)
    return psycopg.connect(as_role, autocommit=True)


def allowed(conn: psycopg.Connection, statement: str) -> bool:
    """Whether the server lets ``conn``'s role run ``statement`` (a constraint that fails
    after the check counts as let in)."""
    try:
        conn.execute(statement)
    except errors.InsufficientPrivilege:
        return False
    except (errors.NotNullViolation, errors.CheckViolation):
        return True
    return True


def rights(conn: psycopg.Connection, table: str) -> dict[str, bool]:
    column = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum LIMIT 1",
        (table,),
    ).fetchone()[0]
    return {
        "select": allowed(conn, f"SELECT * FROM {table} LIMIT 0"),
        "insert": allowed(conn, f"INSERT INTO {table} SELECT * FROM {table} WHERE false"),
        "update": allowed(conn, f"UPDATE {table} SET {column} = {column} WHERE false"),
        "delete": allowed(conn, f"DELETE FROM {table} WHERE false"),
        "truncate": allowed(conn, f"TRUNCATE {table}"),
    }


def schema_changes(conn: psycopg.Connection) -> dict[str, bool]:
    """Whether the role may create a table and alter one of ours (each undone when it could)."""
    create = allowed(conn, "CREATE TABLE roles_probe (a int)")
    if create:
        conn.execute("DROP TABLE roles_probe")
    try:
        conn.execute("ALTER TABLE rentals ADD COLUMN roles_probe int")
    except errors.InsufficientPrivilege:  # "must be owner of table rentals"
        alter = False
    else:
        alter = True
        conn.execute("ALTER TABLE rentals DROP COLUMN roles_probe")
    return {"create": create, "alter": alter}


def cli_env(url: str, tmp_path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ["HOME"],
        "RENTALSTREAM_HOME": str(tmp_path / "home"),
        "RENTALSTREAM_DATABASE_URL": url,
    }


@pytest.fixture
def with_roles(own_postgres, tmp_path) -> str:
    passwords = tmp_path / "passwords"
    passwords.mkdir()
    (passwords / "rentalstream_scorer").write_text(TRICKY_PASSWORD + "\n")
    done = run_cli(cli_env(own_postgres.url, tmp_path), "db", "roles", "--passwords-dir", str(passwords))
    assert done.returncode == 0, done.stdout + done.stderr
    for role in (
        "rentalstream_migrator",
        "rentalstream_scorer",
        "rentalstream_monitor",
        "rentalstream_retrainer",
        "rentalstream_reader",
    ):
        assert f"{role} (new)" in done.stdout, done.stdout
    assert "passwords set: rentalstream_scorer" in done.stdout
    return own_postgres.url


def test_each_service_role_reads_and_writes_only_its_tables_and_changes_no_schema(with_roles):
    for role, written in WRITES.items():
        with connect(with_roles, role) as conn:
            for table in sorted(TABLES):
                expected = {
                    "select": role == "rentalstream_reader" or table in written | READS.get(role, set()),
                    "insert": table in written,
                    "update": table in written,
                    "delete": False,
                    "truncate": False,
                }
                assert rights(conn, table) == expected, (role, table)
            assert schema_changes(conn) == {"create": False, "alter": False}, role
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("DROP TABLE dead_letters")


def test_the_migrator_owns_the_schema_and_its_upgrade_grants_on_the_tables_it_creates(with_roles):
    migrator = roles.role_url(with_roles, roles.MIGRATOR)
    with connect(with_roles, "rentalstream_migrator") as conn:
        assert all(rights(conn, table)[right] for table in TABLES for right in ("select", "insert", "update"))
        assert schema_changes(conn) == {"create": True, "alter": True}
        conn.execute("DROP TABLE drift_events")
    assert engines.upgrade(migrator) == ["drift_events"]
    with connect(with_roles, "rentalstream_monitor") as conn:
        assert rights(conn, "drift_events")["insert"]
    with connect(with_roles, "rentalstream_reader") as conn:
        assert rights(conn, "drift_events") == {
            "select": True,
            "insert": False,
            "update": False,
            "delete": False,
            "truncate": False,
        }
    with connect(with_roles, "rentalstream_scorer") as conn:
        assert not rights(conn, "drift_events")["select"]


def test_roles_again_creates_nothing_and_a_role_logs_in_with_the_password_given(with_roles, own_postgres, tmp_path):
    done = run_cli(cli_env(with_roles, tmp_path), "db", "roles")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(new)" not in done.stdout and "passwords set: none" in done.stdout
    # The embedded server trusts 127.0.0.1; ask the scorer's role for its password instead.
    hba = own_postgres.pgdata / "pg_hba.conf"
    hba.write_text("host all rentalstream_scorer 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(with_roles, autocommit=True) as admin:
        admin.execute("SELECT pg_reload_conf()")
    url = make_url(with_roles).set(username="rentalstream_scorer")
    with psycopg.connect(url.set(password=TRICKY_PASSWORD).render_as_string(hide_password=False)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("rentalstream_scorer",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.set(password=TRICKY_PASSWORD[:-1]).render_as_string(hide_password=False))
