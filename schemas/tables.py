"""The Postgres tables, defined once (SQLAlchemy Core). ``rentalstream db upgrade``
creates them; every write to them is an upsert keyed by the message id.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

cars = Table(
    "cars",
    metadata,
    Column("car_id", BigInteger, primary_key=True),
    Column("model_key", String(64), nullable=False),
    Column("mileage", Integer, nullable=False),
    Column("engine_power", Integer, nullable=False),
    Column("fuel", String(32), nullable=False),
    Column("paint_color", String(32), nullable=False),
    Column("car_type", String(32), nullable=False),
    Column("private_parking_available", Boolean, nullable=False),
    Column("has_gps", Boolean, nullable=False),
    Column("has_air_conditioning", Boolean, nullable=False),
    Column("automatic_car", Boolean, nullable=False),
    Column("has_getaround_connect", Boolean, nullable=False),
    Column("has_speed_regulator", Boolean, nullable=False),
    Column("winter_tires", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

rentals = Table(
    "rentals",
    metadata,
    Column("rental_id", BigInteger, primary_key=True),
    Column("car_id", BigInteger, nullable=False, index=True),
    Column("checkin_type", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("delay_at_checkout_minutes", Integer),
    Column("previous_ended_rental_id", BigInteger, index=True),
    Column("planned_gap_minutes", Integer),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    # clock_timestamp(), not now(): the time of the write, not of the transaction start.
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()),
)

prices = Table(
    "prices",
    metadata,
    Column("price_id", String(160), primary_key=True),
    Column("rental_id", BigInteger, index=True),
    Column("request_id", String(128), index=True),
    Column("car_id", BigInteger),
    Column("price_per_day", Float, nullable=False),
    Column("listed_price_per_day", Float),
    Column("unknown_fields", ARRAY(Text), nullable=False),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(32), nullable=False),
    # Added with issue 9 (nullable, so `rentalstream db upgrade` adds them to older tables).
    Column("price_lower", Float),
    Column("price_upper", Float),
    Column("challenger_model_version", String(32)),
    Column("challenger_price_per_day", Float),
    # Added with issue 23's live split (nullable too).
    Column("challenger_price_lower", Float),
    Column("challenger_price_upper", Float),
    Column("answered_with_version", String(32)),
    # Added with issue 23's error estimates (nullable too).
    Column("estimated_error", Float),
    Column("challenger_estimated_error", Float),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
)

# The request log: who asked to price what, and when. The answer (price, model,
# version, scored_at) is the row of `prices` with price_id = request_id.
price_requests = Table(
    "price_requests",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("client", String(128)),
    Column("car", JSONB, nullable=False),
    Column("reply_to", String(249)),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()),
)

delays = Table(
    "delays",
    metadata,
    Column("rental_id", BigInteger, primary_key=True),
    Column("car_id", BigInteger, nullable=False, index=True),
    Column("checkin_type", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("delay_at_checkout_minutes", Integer),
    Column("is_late", Boolean),
    Column("previous_ended_rental_id", BigInteger, index=True),
    Column("planned_gap_minutes", Integer),
    Column("previous_delay_minutes", Integer),
    Column("waiting_minutes", Integer),
    Column("is_conflict", Boolean),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("dead_letter_id", String(300), primary_key=True),
    Column("topic", String(249), nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    Column("message_key", Text),
    Column("raw_value", LargeBinary, nullable=False),
    Column("reason", Text, nullable=False),
    Column("consumer", String(128), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

# The monitor's alerts, one row per change of state of a signal (see DriftAlert).
drift_events = Table(
    "drift_events",
    metadata,
    Column("alert_id", String(400), primary_key=True),
    Column("signal", String(160), nullable=False, index=True),
    Column("detector", String(80), nullable=False),
    Column("state", String(16), nullable=False),
    Column("before_n", BigInteger, nullable=False),
    Column("before_mean", Float, nullable=False),
    Column("before_std", Float, nullable=False),
    Column("after_n", BigInteger, nullable=False),
    Column("after_mean", Float, nullable=False),
    Column("after_std", Float, nullable=False),
    Column("reference_mean", Float),
    Column("reference_std", Float),
    Column("events_seen", BigInteger, nullable=False),
    Column("triggered_by", String(200), nullable=False),
    Column("model_name", String(128)),
    Column("model_version", String(32)),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()),
)

# The monitor's current view of every signal, rewritten as it goes; `rentalstream
# drift-report` and the dashboard read it.
drift_signals = Table(
    "drift_signals",
    metadata,
    Column("signal", String(160), primary_key=True),
    Column("detector", String(80), nullable=False),
    Column("state", String(16), nullable=False),  # stable | drifting
    Column("events_seen", BigInteger, nullable=False),
    Column("window_n", BigInteger, nullable=False),
    Column("window_mean", Float),
    Column("reference_mean", Float),
    Column("last_alert_id", String(400)),
    Column("last_alert_at", DateTime(timezone=True)),
    Column("model_version", String(32)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()),
)

# The retrains set off by drift (training.retrainer), one row per alert that set one
# off: the alert's id is the key, so no alert starts two, and at most one row is
# `running` at a time (the partial unique index), whichever retrainer claims it.
retrains = Table(
    "retrains",
    metadata,
    Column("alert_id", String(400), primary_key=True),
    Column("signal", String(160), nullable=False),
    Column("reason", String(32), nullable=False),  # error | sustained drift
    Column("status", String(16), nullable=False),  # running | registered | skipped | failed | abandoned
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("reference_rows", Integer),
    Column("recent_rows", Integer),
    Column("recent_share", Float),
    Column("model_version", String(32)),
    Column("run_id", String(64)),
    Column("cv_mae", Float),
    Column("cv_rmse", Float),
    Column("detail", Text),
    Index(
        "retrains_one_running",
        "status",
        unique=True,
        postgresql_where=text("status = 'running'"),
    ),
)
