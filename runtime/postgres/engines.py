"""`rentalstream db upgrade`: create the tables of ``schemas.tables`` that are missing,
and add the columns a newer version of a table has gained."""

from __future__ import annotations

import asyncio

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from runtime.postgres import roles
from runtime.settings import normalised_database_url
from schemas.tables import metadata


class CannotMigrate(RuntimeError):
    pass


def async_engine(
    database_url: str, pool_size: int = 4, driver: str = "psycopg", ping_on_checkout: bool = True
) -> AsyncEngine:
    """An async engine on ``driver`` (``psycopg`` or ``asyncpg``) for ``database_url``.

    ``ping_on_checkout`` asks the server before every use of a pooled connection whether
    it is still there: one round trip per transaction. A writer that retries each failed
    transaction (``retries.with_retries``) can go without: a connection the server has
    dropped fails its first statement, SQLAlchemy then discards the whole pool, and the
    retry opens a fresh one."""
    url = normalised_database_url(database_url)
    if driver != "psycopg":
        url = url.replace("postgresql+psycopg://", f"postgresql+{driver}://", 1)
    return create_async_engine(url, pool_size=pool_size, pool_pre_ping=ping_on_checkout)


async def answers(engine: AsyncEngine, timeout: float = 2.0) -> bool:
    """Whether the database takes a query now (for readiness: a scorer that cannot write
    is not ready, whatever else is)."""
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError):
        return False
    return True


def read_rows(database_url: str, *queries) -> list[list[dict]]:
    """The rows of each query (SQLAlchemy statements), as dicts, on one short-lived
    connection: what a command reads once and prints."""
    engine = create_engine(normalised_database_url(database_url))
    try:
        with engine.connect() as conn:
            return [[dict(row) for row in conn.execute(query).mappings()] for query in queries]
    finally:
        engine.dispose()


def upgrade(database_url: str) -> list[str]:
    """Create missing tables and indexes, add missing nullable columns to existing ones;
    return the names of the tables created and of the columns added (``table.column``)."""
    engine = create_engine(normalised_database_url(database_url))
    try:
        with engine.begin() as conn:
            inspector = inspect(conn)
            migrations = Operations(MigrationContext.configure(conn))
            before = set(inspector.get_table_names())
            added = []
            for table in metadata.sorted_tables:
                if table.name not in before:
                    continue
                present = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name in present:
                        continue
                    if not column.nullable and column.server_default is None:
                        raise CannotMigrate(
                            f"{table.name}.{column.name} is new and NOT NULL without a default; "
                            "it cannot be added to existing rows automatically"
                        )
                    migrations.add_column(table.name, column._copy())
                    added.append(f"{table.name}.{column.name}")
            metadata.create_all(conn)
            if len(roles.existing_roles(conn)) == len(roles.ROLES):
                roles.grant_privileges(conn)  # the rights of `db roles`, on the tables created now too
        return sorted(set(metadata.tables) - before) + added
    finally:
        engine.dispose()
