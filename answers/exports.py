"""Any result table written to CSV or Parquet, streamed: rows come off a server-side cursor
``batch_rows`` at a time and each batch is written before the next is read, so a
table of millions of rows never sits in memory at once. Read by ``rentalstream export``.

Every column keeps its type in Parquet. JSON and array columns (a request's car, a
price's unknown fields) are written as JSON text in both formats. In CSV, binary columns
(a dead letter's raw message) are written in base64, and times in ISO 8601 (UTC).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

import polars as pl
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from schemas import tables

Format = Literal["csv", "parquet"]
# The column ``--since`` filters on: when the row was written or what it records happened.
TIME_COLUMNS = {
    "cars": "updated_at",
    "rentals": "event_time",
    "prices": "scored_at",
    "price_requests": "requested_at",
    "delays": "scored_at",
    "dead_letters": "received_at",
    "drift_events": "detected_at",
    "drift_signals": "updated_at",
}
BATCH_ROWS = 50_000


class CannotExport(ValueError):
    """An unknown table, or a format or time it cannot be exported with."""


def export_table(
    database_url: str,
    table_name: str,
    output: Path | None,
    fmt: Format = "csv",
    since: datetime | None = None,
    batch_rows: int = BATCH_ROWS,
    on_batch: Callable[[int], None] = lambda rows: None,
) -> int:
    """Write ``table_name`` (its rows since ``since``, in key order) to ``output`` (None:
    standard output, CSV only); the number of rows. ``on_batch`` hears each batch's size."""
    from runtime.postgres.engines import normalised_database_url

    table = _table(table_name)
    if output is None and fmt != "csv":
        raise CannotExport("Parquet is binary: give --output PATH")
    query = _since(select(*(_as_written(c, fmt) for c in table.columns)), table, since)
    query = query.order_by(*table.primary_key.columns)
    schema = {c.name: _polars_type(c, fmt) for c in table.columns}
    engine = create_engine(normalised_database_url(database_url))
    written = 0
    try:
        with engine.connect() as conn, BatchWriter(output, fmt) as write:
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(query)
            for rows in result.partitions():
                write(pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row"))
                written += len(rows)
                on_batch(len(rows))
            if written == 0:
                write(pl.DataFrame(schema=schema))  # the header (CSV) or the schema (Parquet) alone
    finally:
        engine.dispose()
    return written


def count_rows(database_url: str, table_name: str, since: datetime | None = None) -> int:
    """How many rows ``export_table`` would write (for a progress bar)."""
    from runtime.postgres.engines import read_rows

    table = _table(table_name)
    query = _since(select(func.count().label("rows")).select_from(table), table, since)
    [[row]] = read_rows(database_url, query)
    return row["rows"]


def _table(name: str):
    if name not in TIME_COLUMNS:
        raise CannotExport(f"no table {name!r}; the result tables: {', '.join(TIME_COLUMNS)}")
    return tables.metadata.tables[name]


def _since(query, table, since: datetime | None):
    """``query`` kept to the rows of ``table`` at or after ``since`` by its time column."""
    return query if since is None else query.where(table.c[TIME_COLUMNS[table.name]] >= since)


def _as_written(column, fmt: Format):
    if isinstance(column.type, JSONB | ARRAY):
        return func.to_jsonb(column).cast(Text).label(column.name)
    if isinstance(column.type, LargeBinary) and fmt == "csv":
        return func.encode(column, "base64").label(column.name)
    return column


def _polars_type(column, fmt: Format) -> pl.DataType:
    kind = column.type
    if isinstance(kind, JSONB | ARRAY | String | Text):
        return pl.String()
    if isinstance(kind, LargeBinary):
        return pl.String() if fmt == "csv" else pl.Binary()
    if isinstance(kind, DateTime):
        return pl.Datetime("us", "UTC")
    if isinstance(kind, Boolean):
        return pl.Boolean()
    if isinstance(kind, BigInteger):
        return pl.Int64()
    if isinstance(kind, Integer):
        return pl.Int32()
    if isinstance(kind, Float):
        return pl.Float64()
    raise CannotExport(f"{column.table.name}.{column.name}: no export type for {kind!r}")


class BatchWriter:
    """A context manager giving ``write(batch)``: CSV with one header, or one Parquet file
    written row group by row group. A file is written beside its path (``.partial``) and
    renamed onto it once complete, so a failed export never leaves half a table there."""

    def __init__(self, output: Path | None, fmt: Format) -> None:
        self.output, self.fmt = output, fmt
        self.partial = None if output is None else output.with_name(output.name + ".partial")
        self._file: IO[bytes] | None = None
        self._parquet = None
        self._header = True

    def __enter__(self) -> Callable[[pl.DataFrame], None]:
        if self.fmt == "csv":
            self._file = sys.stdout.buffer if self.partial is None else self.partial.open("wb")
        return self.write

    def write(self, batch: pl.DataFrame) -> None:
        if self.fmt == "csv":
            batch.write_csv(self._file, include_header=self._header)
            self._header = False
            return
        import pyarrow.parquet as pq

        arrow = batch.to_arrow()
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(str(self.partial), arrow.schema)
        self._parquet.write_table(arrow)

    def __exit__(self, failure_type, *_) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            self._file.flush()
            if self.partial is not None:
                self._file.close()
        if self.partial is None:
            return
        if failure_type is None:
            self.partial.replace(self.output)
        else:
            self.partial.unlink(missing_ok=True)
