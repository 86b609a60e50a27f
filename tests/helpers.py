"""Small helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import lightgbm
import mlflow
import numpy as np
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from runtime.kafka.topics import partition_ids
from runtime.settings import normalised_database_url
from schemas.cars import EQUIPMENT
from schemas.topics import CATALOGUE


def once(stop: Callable[[], None]) -> Callable[[], None]:
    """``stop`` made safe to call twice (a test stopping a server early, then the fixture's
    teardown): it runs the first time only."""
    done = False

    def stop_once() -> None:
        nonlocal done
        if not done:
            done = True
            stop()

    return stop_once


# A valid car as a client would send it: field names of CarFeatures, training spellings.
SAMPLE_CAR = {
    "model_key": "Renault",
    "mileage": 120_000,
    "engine_power": 110,
    "fuel": "diesel",
    "paint_color": "grey",
    "car_type": "estate",
}


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            pytest.fail(f"process exited ({process.returncode}) while waiting for {what}\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{tail}")
        time.sleep(0.2)


def query(database_url: str, sql: str) -> pd.DataFrame:
    """The rows of one SQL query, as a DataFrame."""
    engine = create_engine(normalised_database_url(database_url))
    try:
        with engine.connect() as conn:
            return pd.read_sql(text(sql), conn)
    finally:
        engine.dispose()


def reference_prices(model, cars: pd.DataFrame) -> np.ndarray:
    """What a fitted LightGBM model says for ``cars``, independently of our feature code."""
    return model.predict(reference_matrix(model.booster_.feature_name(), cars))


def reference_matrix(feature_names: list[str], cars: pd.DataFrame) -> pd.DataFrame:
    """A LightGBM model's matrix for ``cars`` without our feature code: the raw columns,
    with plain pandas, in the model's own feature order. LightGBM maps string categories
    with the lists it stored at training (a value it never saw becomes missing)."""
    return pd.DataFrame(
        {
            name: cars[name].astype("category")
            if pd.api.types.is_string_dtype(cars[name])
            else cars[name].astype("float64")
            for name in feature_names
        }
    )


def spawn(command: str, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start `rentalstream <command>` as a child process appending to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "rentalstream.cli", command], env=env, stdout=log, stderr=subprocess.STDOUT
        )


@contextmanager
def service_process(command: str, env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """`rentalstream <command>` as a child process logging to ``log_path``; SIGTERM at the end."""
    process = spawn(command, env, log_path)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m rentalstream.cli ARGS` (the entry point, exit codes included) with
    exactly ``env``, and a terminal wide enough for its tables."""
    return subprocess.run(
        [sys.executable, "-m", "rentalstream.cli", *args],
        env={**env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli(env: dict[str, str], *args: str) -> str:
    """What a command that must succeed prints."""
    done = run_cli(env, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def registry_copy(mlflow_registry, folder: Path) -> str:
    """A copy of the session's registry (its champion, v1) in ``folder``, whose aliases a
    test may move without touching the other tests' champion; its tracking URI."""
    uri, _ = mlflow_registry
    shutil.copy(uri.removeprefix("sqlite:///"), folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def register_small_model(
    uri: str,
    pricing: pd.DataFrame,
    run_name: str,
    *,
    trees: int = 30,
    leaves: int = 8,
    artifacts: dict[str, dict] | None = None,
):
    """Register another, smaller LightGBM as a new version of the model (no interval, no
    reference unless ``artifacts`` logs them); returns (its version, the model)."""
    from training.features import TARGET, build_features

    model = lightgbm.LGBMRegressor(n_estimators=trees, num_leaves=leaves, verbose=-1)
    model.fit(build_features(pricing), pricing[TARGET])
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("rentalstream-price")
    with mlflow.start_run(run_name=run_name):
        for name, content in (artifacts or {}).items():
            mlflow.log_dict(content, name)
        info = mlflow.lightgbm.log_model(model, name="model", registered_model_name="rentalstream-price")
    return str(info.registered_model_version), model


def champion(mlflow_registry):
    uri, training = mlflow_registry
    mlflow.set_tracking_uri(uri)
    return training.champion_version, mlflow.lightgbm.load_model(
        f"models:/rentalstream-price/{training.champion_version}"
    )


def champion_estimate(mlflow_registry, car: dict, price: float) -> float:
    """The champion's error estimator, as logged at training, on ``car`` (in the training
    table's spelling) priced ``price``: LightGBM's own model text, fed a matrix built
    without our feature code."""
    mlflow.set_tracking_uri(mlflow_registry[0])
    run_id = mlflow.MlflowClient().get_model_version("rentalstream-price", mlflow_registry[1].champion_version).run_id
    estimator = lightgbm.Booster(model_str=mlflow.artifacts.load_text(f"runs:/{run_id}/error_model.txt"))
    priced = pd.DataFrame([{**dict.fromkeys(EQUIPMENT, False), **car, "price_per_day": price}])
    return round(max(float(estimator.predict(reference_matrix(estimator.feature_name(), priced))[0]), 0.0), 2)


def interval_ratios(tracking_uri: str, version: str) -> tuple[float, float]:
    """The (lower, upper) ratios logged with a version at training, read straight from its run."""
    mlflow.set_tracking_uri(tracking_uri)
    run_id = mlflow.MlflowClient().get_model_version("rentalstream-price", version).run_id
    stored = mlflow.artifacts.load_dict(f"runs:/{run_id}/price_interval.json")
    return stored["lower_ratio"], stored["upper_ratio"]


def expected_prices(model, cars: list[dict]) -> list[float]:
    """What LightGBM says for these cars, from plain pandas (no code of ours)."""
    full = [{**dict.fromkeys(EQUIPMENT, False), **car} for car in cars]  # the contract's defaults
    return [round(float(p), 2) for p in reference_prices(model, pd.DataFrame(full))]


async def read_topic(
    bootstrap: str,
    topic: str,
    timeout: float = 60,
    isolation_level: str = "read_committed",
    security: dict | None = None,
) -> list:
    """Every record on ``topic`` from the beginning of each partition to its end now, as
    a ``read_committed`` reader sees them (unless told otherwise), logged in with
    ``security`` (aiokafka's options) on a secured cluster."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        auto_offset_reset="earliest",  # a seek_to_beginning can lose the race with a default reset to the end
        **(security or {}),
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partition_ids(bootstrap, topic, security)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        records: list = []
        deadline = time.monotonic() + timeout
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]] and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def metric_samples(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` on a service's /metrics, by their sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text)
        for sample in family.samples
        if sample.name == name
    }


async def partition_counts(bootstrap: str, security: dict | None = None) -> dict[str, int]:
    """Each catalogue topic's partition count, as the broker describes it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics([t.name for t in CATALOGUE])}
    finally:
        await admin.close()


async def log_end(bootstrap: str, topic: str) -> int:
    """The sum of ``topic``'s log end offsets: every message it holds (or has held)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partition_ids(bootstrap, topic)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


# -- on a secured cluster: what a login may and may not do ---------------------------


async def refused_at_connect(**options) -> None:
    producer = AIOKafkaProducer(request_timeout_ms=5000, **options)
    with pytest.raises(KafkaConnectionError):
        async with asyncio.timeout(60):
            await producer.start()
    await producer.stop()


async def connects(**options) -> None:
    producer = AIOKafkaProducer(request_timeout_ms=5000, **options)
    await producer.start()
    await producer.stop()


async def refused_to_write(topic: str, **options) -> None:
    producer = AIOKafkaProducer(**options)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topic, b"{}")
    finally:
        await producer.stop()


async def refused_to_read(topic: str, **options) -> None:
    consumer = AIOKafkaConsumer(topic, group_id=None, **options)
    try:
        with pytest.raises(TopicAuthorizationFailedError):  # at start (its metadata), or at the first fetch
            async with asyncio.timeout(30):
                await consumer.start()
                while True:
                    await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()
