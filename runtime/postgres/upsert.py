"""Writes every consumer makes: results as upserts by key (binary COPY through a staging
table from ``COPY_FROM_ROWS`` rows on), and dead letters, each in the caller's transaction."""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from functools import cache

from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Column, MetaData, Table, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateTable

from schemas import tables
from schemas.events import DeadLetter

STAMPS = ("stored_at", "updated_at")  # a rewritten row records when it was last written
COPY_FROM_ROWS = 100  # fewer rows go as one multi-row upsert: COPY costs two more round trips


async def upsert(conn: AsyncConnection, table: Table, key: str, rows: list[dict]) -> None:
    """Upsert ``rows`` by ``key`` (the last write of an id wins), in the caller's transaction.

    From ``COPY_FROM_ROWS`` rows on, at COPY speed: the rows are COPYed (binary) into a
    temporary staging table (emptied at commit), then moved by one ``INSERT … SELECT …
    ON CONFLICT (key) DO UPDATE``. For 2,000 prices here: binary COPY 5 ms, text COPY
    18 ms, an executemany of single-row upserts ~100 ms. A few rows (a /predict request)
    go straight in with one ``INSERT … ON CONFLICT``: one round trip instead of three.

    On an asyncpg engine the COPY is asyncpg's ``copy_records_to_table``; it measured
    slower than psycopg's (docs/decisions.md), and is kept for that measurement."""
    if not rows:
        return
    rows = list({row[key]: row for row in rows}.values())
    columns = tuple(c.name for c in table.columns if c.name in rows[0])
    if len(rows) < COPY_FROM_ROWS:
        await conn.execute(_upsert(table, key, columns), rows)
        return
    staging = _staging_table(table)
    await conn.execute(CreateTable(staging, if_not_exists=True))  # once per connection; then a no-op
    driver = (await conn.get_raw_connection()).driver_connection
    if type(driver).__module__.startswith("asyncpg"):  # not imported otherwise: a service never loads it
        await _copy_asyncpg(driver, table, staging.name, columns, rows)
    else:
        await _copy_psycopg(driver, staging.name, columns, rows)
    await conn.execute(_upsert(table, key, columns, from_staging=True))


async def _copy_asyncpg(driver, table: Table, staging: str, columns: tuple[str, ...], rows: list[dict]) -> None:
    """asyncpg's binary COPY (its encoders are compiled); JSON goes as text, as
    SQLAlchemy's codec for asyncpg has it."""
    as_json = {c for c in columns if isinstance(table.c[c].type, JSON)}
    records = (
        [tuple(json.dumps(row[c]) if c in as_json else row[c] for c in columns) for row in rows]
        if as_json
        else [tuple(map(row.__getitem__, columns)) for row in rows]
    )
    await driver.copy_records_to_table(staging, records=records, columns=columns)


async def _copy_psycopg(driver, staging_name: str, columns: tuple[str, ...], rows: list[dict]) -> None:
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    async with driver.cursor() as cursor:
        types = _copy_types.get((staging_name, columns))
        if types is None:  # the column types as the server has them (built-in type OIDs never change)
            await cursor.execute(sql.SQL("SELECT {} FROM {} LIMIT 0").format(names, sql.Identifier(staging_name)))
            types = _copy_types[staging_name, columns] = [column.type_code for column in cursor.description]
        copy_statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(staging_name), names)
        # A row's values picked in C, not listed in Python (1 µs a row, ~4 rows a rental).
        values = operator.itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
        async with cursor.copy(copy_statement) as copy:
            copy.set_types(types)
            for row in rows:
                await copy.write_row(values(row))


_copy_types: dict[tuple[str, tuple[str, ...]], list[int]] = {}


@cache
def _staging_table(table: Table) -> Table:
    """``table``'s columns without constraints or defaults, temporary, emptied at each commit."""
    return Table(
        f"staging_{table.name}",
        MetaData(),
        *(Column(c.name, c.type) for c in table.columns),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DELETE ROWS",
    )


@cache
def _upsert(table: Table, key: str, columns: tuple[str, ...], from_staging: bool = False):
    """``INSERT … ON CONFLICT (key) DO UPDATE`` of ``columns``: of bound rows, or of
    everything in the staging table."""
    statement = insert(table)
    if from_staging:
        staging = _staging_table(table)
        statement = statement.from_select(list(columns), select(*(staging.c[c] for c in columns)))
    updates = {c: statement.excluded[c] for c in columns if c != key}
    for stamp in STAMPS:
        if stamp in table.c:
            updates[stamp] = func.clock_timestamp()
    return statement.on_conflict_do_update(index_elements=[key], set_=updates)


async def upsert_in_one_statement(conn: AsyncConnection, *writes: tuple[Table, str, list[dict]]) -> None:
    """One ``INSERT … ON CONFLICT (key) DO UPDATE`` per (table, key, rows), all in a single
    statement (every one but the last a data-modifying ``WITH``, which PostgreSQL runs
    whether or not the rest reads it): atomic without a transaction around it, and one
    round trip. For a few rows each (a multi-row ``VALUES``); ``upsert`` for many.

    The text is psycopg's, not SQLAlchemy's: SQLAlchemy cannot cache a statement with
    data-modifying CTEs and multi-row values, and building and compiling it anew took
    ~0.8 ms, more than the round trips it saves. The text is kept per shape (tables,
    columns, row counts), and psycopg prepares it on the server once it repeats. psycopg
    engines only (the scorer's)."""
    shapes, values = [], []
    for table, key, rows in writes:
        columns = tuple(c.name for c in table.columns if c.name in rows[0])
        by_key = {row[key]: row for row in rows}  # a statement cannot update one row twice
        shapes.append((table, key, columns, len(by_key)))
        json_columns = _json_columns(table)
        values += [Jsonb(row[c]) if c in json_columns else row[c] for row in by_key.values() for c in columns]
    # Through SQLAlchemy all the same: its errors, and a dropped connection discarding the pool.
    await conn.exec_driver_sql(_upserts_sql(tuple(shapes)), tuple(values))


@cache
def _upserts_sql(shapes: tuple[tuple[Table, str, tuple[str, ...], int], ...]) -> str:
    *first, last = (_upsert_sql(*shape) for shape in shapes)
    if first:
        ctes = sql.SQL(", ").join(
            sql.SQL("{} AS ({})").format(sql.Identifier(f"upsert_{n}"), s) for n, s in enumerate(first)
        )
        last = sql.SQL("WITH {} {}").format(ctes, last)
    return last.as_string(None)


@cache
def _json_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type, JSON))


def _upsert_sql(table: Table, key: str, columns: tuple[str, ...], rows: int) -> sql.Composed:
    row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    updates = [sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in columns if c != key]
    updates += [sql.SQL("{} = clock_timestamp()").format(sql.Identifier(s)) for s in STAMPS if s in table.c]
    return sql.SQL("INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join([row] * rows),
        sql.Identifier(key),
        sql.SQL(", ").join(updates),
    )


async def insert_dead_letters(conn: AsyncConnection, dead_letters: Sequence[DeadLetter]) -> None:
    """Store dead letters in the caller's transaction; a redelivered one is already there."""
    if not dead_letters:
        return
    rows = [
        {
            "dead_letter_id": d.dead_letter_id,
            "topic": d.topic,
            "kafka_partition": d.partition,
            "kafka_offset": d.offset,
            "message_key": d.key,
            "raw_value": d.raw_value,
            "reason": d.reason,
            "consumer": d.consumer,
            "received_at": d.received_at,
        }
        for d in dead_letters
    ]
    await conn.execute(insert(tables.dead_letters).on_conflict_do_nothing(), rows)
