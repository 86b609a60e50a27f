"""compose.yaml's Kafka, PostgreSQL, MLflow server and one-shot jobs, run as processes on this
machine (no Docker engine answers here, so no container runs):

- the secrets `make compose-secrets` writes (passwords, a CA, the servers' certificates);
- Kafka's log formatted with the SCRAM logins by compose's `kafka-logins` job, then the
  node configured from compose's `kafka` environment by Kafka's own docker wrapper, as
  the apache/kafka image does, with only its addresses, log folder and secrets' folder
  moved here: TLS only, SCRAM logins, ACLs; its healthcheck logs in, a client without a
  login, with a wrong password or trusting another CA does not, and each service's
  principal logs in with its own secret;
- PostgreSQL as the image makes and starts it with compose's command line, pg_hba.conf
  and server key (Debian's build, with TLS): plaintext, another CA and a wrong password
  are refused, and every login of the test is compose's, over verified TLS;
- the MLflow server with compose's own command line, but for its address, database host
  and artifact folder;
- `rentalstream init` three times against them; then a scorer
  and its healthcheck (`rentalstream probe scorer`) on what init prepared, and a short
  replay it scores, its prices read back as a read_committed consumer reads them.
  Each runs with compose's Kafka login: init as the admin (it grants the services' ACLs),
  the scorer as rentalstream-scorer, the replay as the tools' rentalstream-producer, the
  reader as rentalstream-dashboard; the scorer's principal may not write `drift`."""

import asyncio
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from mlflow import MlflowClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from rentalstream import kafka_acls, processes
from runtime.registry_process import RegistryProcess
from runtime.settings import normalised_database_url
from schemas.tables import metadata
from schemas.topics import CATALOGUE, DRIFT
from tests.compose import (
    COMPOSE,
    ComposeKafka,
    ComposePostgres,
    compose_kafka,
    compose_postgres,
    mount_secrets,
    with_defaults,
)
from tests.helpers import (
    connects,
    metric_samples,
    partition_counts,
    read_topic,
    refused_at_connect,
    refused_to_write,
    service_process,
    wait_for,
)
from tests.tls import authority

pytestmark = pytest.mark.integration
MODEL = "rentalstream-price"
REPLAYED = 500


def compose_mlflow_command(postgres: ComposePostgres, port: int, artifacts: Path) -> list[str]:
    """compose's `mlflow server` command, pointed at this machine's pieces."""
    program, verb, *arguments = COMPOSE["services"]["mlflow"]["command"]
    (database,) = [a.split("=", 1)[1] for a in arguments if a.startswith("--backend-store-uri=")]
    local = {
        "--host": "127.0.0.1",
        "--port": str(port),
        "--backend-store-uri": postgres.moved(database, "mlflow"),  # over TLS, verified against compose's CA
        "--artifacts-destination": str(artifacts),
    }
    assert (program, verb) == ("mlflow", "server")
    replaced = [arg.split("=", 1)[0] for arg in arguments if arg.split("=", 1)[0] in local]
    assert sorted(replaced) == sorted(local), "compose's command no longer sets what this test replaces"
    kept = [arg for arg in arguments if arg.split("=", 1)[0] not in local]  # --serve-artifacts, --allowed-hosts, ...
    return [str(Path(sys.executable).with_name("mlflow")), "server", *kept, *(f"{f}={v}" for f, v in local.items())]


def run_init(env: dict[str, str], secrets_dir: Path) -> str:
    """compose's init command, its secrets (those compose mounts for init) read from a
    folder of ``secrets_dir`` rather than /run/secrets."""
    mounted = mount_secrets("init", secrets_dir)
    program, *arguments = COMPOSE["services"]["init"]["command"]
    assert program == "rentalstream" and "/run/secrets" in arguments
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rentalstream.cli",
            *(str(mounted) if a == "/run/secrets" else a for a in arguments),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def probe(env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, "-m", "rentalstream.cli", "probe", "scorer"], env=env, capture_output=True, check=False
    ).returncode


async def aliases(tracking_uri: str, tmp_path: Path) -> tuple[str | None, str | None]:
    registry = RegistryProcess(tracking_uri, MODEL, tmp_path / "cache")
    try:
        return await registry.version_behind("champion"), await registry.version_behind("no-such-alias")
    finally:
        await registry.close()


def make_compose_secrets(folder: Path) -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "-s", "compose-secrets", f"SECRETS={folder}", f"PYTHON={sys.executable}"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def only_its_logins_get_in(kafka: ComposeKafka, other_ca: Path) -> None:
    at = {"bootstrap_servers": kafka.bootstrap}
    await refused_at_connect(**at)  # plaintext
    await refused_at_connect(**at, **kafka.options("rentalstream-scorer", password="not-its-password"))
    await refused_at_connect(**at, **kafka.options("rentalstream-scorer", ca_file=other_ca))
    for user in ("admin", *map(kafka_acls.principal, kafka_acls.SERVICES)):  # what kafka-logins formatted
        await connects(**at, **kafka.options(user))


def test_compose_kafka_mlflow_server_and_init_job_prepare_what_a_scorer_needs(tmp_path, data_dir, kafka_runtime):
    secrets_dir = tmp_path / "secrets"  # what `make compose-secrets` writes
    make_compose_secrets(secrets_dir)
    resources = ExitStack()
    try:  # a server that does not start stops the one started before it
        kafka = resources.enter_context(compose_kafka(kafka_runtime, tmp_path / "kafka", secrets_dir))
        postgres = resources.enter_context(compose_postgres(tmp_path / "postgres", secrets_dir))
    except BaseException:
        resources.close()
        raise
    bootstrap, kafka_properties = kafka.bootstrap, kafka.properties
    admin_url = postgres.url_of("init")
    port, artifacts = processes.free_port(), tmp_path / "mlflow-artifacts"
    engine = create_engine(normalised_database_url(admin_url), isolation_level="AUTOCOMMIT")
    mlflow_server = None
    try:
        only_tls_gets_in(admin_url, tmp_path)
        with (tmp_path / "mlflow.log").open("ab") as log:
            mlflow_server = subprocess.Popen(
                compose_mlflow_command(postgres, port, artifacts),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        tracking_uri = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{tracking_uri}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the MLflow server", mlflow_server, tmp_path / "mlflow.log")
        health = kafka.healthcheck()
        assert health.returncode == 0, health.stdout + health.stderr
        asyncio.run(only_its_logins_get_in(kafka, authority("another CA").write(tmp_path / "other-ca.pem")))
        # The services call it by its compose name; a name it was not told of is refused.
        search = f"{tracking_uri}/api/2.0/mlflow/registered-models/search"
        assert httpx.get(search, headers={"Host": "mlflow:5000"}).status_code == 200
        assert httpx.get(search, headers={"Host": "attacker.example"}).status_code in (400, 403)

        partitions = int(
            with_defaults(COMPOSE["services"]["init"]["environment"]["RENTALSTREAM_KAFKA_TOPIC_PARTITIONS"])
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RENTALSTREAM_")},
            **kafka.login_of("init"),
            "RENTALSTREAM_HOME": str(tmp_path / "home"),
            "RENTALSTREAM_DATA_DIR": str(data_dir),
            "RENTALSTREAM_DATABASE_URL": admin_url,
            "RENTALSTREAM_REGISTRY_TRACKING_URI": tracking_uri,
            "RENTALSTREAM_KAFKA_TOPIC_PARTITIONS": str(partitions),
            "RENTALSTREAM_SCORER_PORT": str(processes.free_port()),
            "COLUMNS": "250",  # rich wraps its lines at the terminal's width
        }
        first = run_init(env, secrets_dir)
        admin = kafka.options("admin")
        assert asyncio.run(partition_counts(bootstrap, admin)) == {t.name: partitions for t in CATALOGUE}
        assert all(f"Kafka ACLs of {kafka_acls.principal(service)}" in first for service in kafka_acls.SERVICES)
        assert set(metadata.tables) <= set(inspect(engine).get_table_names())
        client = MlflowClient(tracking_uri)
        champion = client.get_model_version_by_alias(MODEL, "champion")
        assert set(client.get_registered_model(MODEL).aliases) == {"champion"}  # and no challenger beside it
        # Uploaded through the server (the client has no path to the folder) onto the artifact volume ...
        assert list(artifacts.rglob("MLmodel"))
        registry_db = make_url(normalised_database_url(admin_url)).set(database="mlflow")
        with create_engine(registry_db).connect() as conn:  # ... and the registry in Postgres
            assert conn.execute(text("SELECT count(*) FROM model_versions")).scalar_one() == 1

        with engine.connect() as conn:  # each role can log in, with the password of its secret
            logins = dict(
                conn.execute(
                    text("SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'rentalstream_%'")
                ).all()
            )
        roles = {name for name in COMPOSE["secrets"] if name.startswith("rentalstream_")}
        assert set(logins) == roles and all(p.startswith("SCRAM-SHA-256$") for p in logins.values())

        second = run_init(env, secrets_dir)
        assert "not training" in second and "none (all present)" in second
        assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
        # Asked for more partitions than the topics have: they keep theirs (growing one
        # would move keys), and init says what that limits.
        third = run_init({**env, "RENTALSTREAM_KAFKA_TOPIC_PARTITIONS": str(partitions * 2)}, secrets_dir)
        assert f"existed with fewer than RENTALSTREAM_KAFKA_TOPIC_PARTITIONS={partitions * 2}" in third
        assert asyncio.run(partition_counts(bootstrap, admin)) == {t.name: partitions for t in CATALOGUE}

        assert probe(env) == 1  # no scorer yet
        # The scorer logs in as compose says: its role, with its secret's password, and its Kafka principal.
        scorer_env = {**env, **compose_database_login("scorer", postgres), **kafka.login_of("scorer")}
        scorer_login = kafka.options("rentalstream-scorer")
        asyncio.run(refused_to_write(DRIFT.name, bootstrap_servers=bootstrap, **scorer_login))  # the monitor's topic
        with service_process("scorer", scorer_env, tmp_path / "scorer.log") as scorer:
            wait_for(
                lambda: probe(env) == 0, 180, "`rentalstream probe scorer` to pass", scorer, tmp_path / "scorer.log"
            )
            served = metric_samples(f"http://127.0.0.1:{env['RENTALSTREAM_SCORER_PORT']}", "rentalstream_model_info")
            # Its aliases are asked over the server's REST API: no registry process stays beside it.
            children = [c.cmdline() for c in psutil.Process(scorer.pid).children(recursive=True)]
            assert not [c for c in children if "runtime.registry_process" in c], children
            assert asyncio.run(aliases(tracking_uri, tmp_path)) == (champion.version, None)
            # A short replay through compose's Kafka: stored, and published once in committed transactions.
            replay = subprocess.run(
                [sys.executable, "-m", "rentalstream.cli", "replay", "--limit", str(REPLAYED)],
                env={**env, **kafka.login_of("tools")},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert replay.returncode == 0, replay.stdout + replay.stderr
            wait_for(
                lambda: stored(engine) == REPLAYED, 120, "the replay to be scored", scorer, tmp_path / "scorer.log"
            )
        assert (("name", MODEL), ("version", champion.version)) in served
        # Postgres commits before the Kafka transaction does, and a transaction's commit
        # markers reach the partitions a moment after it returns: a read_committed reader
        # right after the rows landed saw 411 of 500 prices once. Read until they are there.
        prices: list = []

        def all_prices_published() -> bool:
            prices[:] = asyncio.run(read_topic(bootstrap, "prices", security=kafka.options("rentalstream-dashboard")))
            return len(prices) >= REPLAYED

        wait_for(all_prices_published, 60, f"{REPLAYED} prices on the topic for a read_committed reader")
        assert sorted(r.key for r in prices) == sorted({r.key for r in prices}) and len(prices) == REPLAYED
        print(f"compose's Kafka, as the image's wrapper wrote it:\n{kafka_properties.read_text()}")
        print(f"init, first run:\n{first}\ninit, second run:\n{second}")
    finally:
        if mlflow_server is not None:
            os.killpg(mlflow_server.pid, 15)
            mlflow_server.wait(30)
        engine.dispose()
        resources.close()


def compose_database_login(service: str, postgres: ComposePostgres) -> dict[str, str]:
    """compose's database login of ``service`` (its URL and its password's file), moved to this machine."""
    environment = COMPOSE["services"][service]["environment"]
    url = postgres.url_of(service)
    assert make_url(url).password is None
    return {
        "RENTALSTREAM_DATABASE_URL": url,
        "RENTALSTREAM_DATABASE_PASSWORD_FILE": postgres.moved(
            environment["RENTALSTREAM_DATABASE_PASSWORD_FILE"], service
        ),
    }


def only_tls_gets_in(url: str, tmp_path: Path) -> None:
    """compose's PostgreSQL refuses plaintext, a client trusting another CA and a wrong password."""
    plain = make_url(url)
    other_ca = authority("another CA").write(tmp_path / "other-ca-postgres.pem")
    refused = {
        "no encryption": plain.update_query_dict({"sslmode": "disable"}),
        "certificate verify failed": plain.update_query_dict({"sslrootcert": str(other_ca)}),
        "password authentication failed": plain.set(password="not-the-password"),
    }
    for reason, login in refused.items():
        with pytest.raises(psycopg.OperationalError, match=reason):
            psycopg.connect(login.render_as_string(hide_password=False), connect_timeout=10).close()
    with psycopg.connect(url) as conn:  # and the admin's own login gets in, encrypted
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)


def stored(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM rentals")).scalar_one()
