"""`rentalstream db upgrade`: create the tables of ``schemas.tables`` that are missing."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from schemas.tables import metadata


def psycopg_url(database_url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError("RENTALSTREAM_DATABASE_URL must be a postgresql:// URL")


def upgrade(database_url: str) -> list[str]:
    """Create missing tables and indexes; return the names of the tables created."""
    engine = create_engine(psycopg_url(database_url))
    try:
        before = set(inspect(engine).get_table_names())
        metadata.create_all(engine)
        return sorted(set(metadata.tables) - before)
    finally:
        engine.dispose()
