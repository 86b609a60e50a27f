"""The running bridge (`rentalstream bridge`, uvicorn) at the edges HTTP clients reach:
a body over the size limit, sized or chunked, is read and answered 413 on a connection
that stays usable; and the champion it reports follows a promotion without a restart."""

import socket
import time

import httpx
import pytest

from rentalstream import services
from tests.conftest import BRIDGE_API_KEY
from tests.helpers import SAMPLE_CAR, cli, register_small_model, registry_copy, service_process, wait_for
from training.features import read_pricing

pytestmark = pytest.mark.e2e
LIMIT = 4096  # conftest's RENTALSTREAM_BRIDGE_MAX_BODY_BYTES
OVERSIZED = b"[" + b" " * (3 * LIMIT) + b"]"  # valid JSON, three times the limit


def exchange(url: str, *requests: bytes) -> list[bytes]:
    """Send ``requests`` one after the other on one keep-alive connection; the raw
    response to each (its head and body), as a client reusing connections reads them."""
    host, port = url.removeprefix("http://").split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        reader = connection.makefile("rb")
        for request in requests:
            connection.sendall(request)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                byte = reader.read(1)
                assert byte, f"the connection closed before an answer; had {head!r}"
                head += byte
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            answers.append(head + reader.read(length))
    return answers


def post(body: bytes, *, chunked: bool = False) -> bytes:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
        b"X-API-Key: " + BRIDGE_API_KEY.encode() + b"\r\n"
    )
    if not chunked:
        return head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    return (
        head
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces)
        + b"0\r\n\r\n"
    )


GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: bridge\r\n\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_read_answered_413_and_the_connection_stays_usable(bridge_url, chunked):
    refused, after = exchange(bridge_url, post(OVERSIZED, chunked=chunked), GET_HEALTH)
    assert refused.startswith(b"HTTP/1.1 413 "), refused[:300]
    assert b"over the limit" in refused or b"too large" in refused.lower(), refused
    assert after.startswith(b"HTTP/1.1 200 "), after[:300]  # the next request on the same connection is answered


def test_a_body_within_the_limit_on_the_same_connection_is_not_refused(bridge_url):
    body = httpx.Request("POST", "/", json=SAMPLE_CAR).content
    assert len(body) < LIMIT
    [answer] = exchange(bridge_url, post(body, chunked=True))
    assert not answer.startswith(b"HTTP/1.1 413 "), answer[:300]


def test_the_bridge_reports_the_champion_it_follows_without_a_restart(
    bridge_env, mlflow_registry, pricing_csv, tmp_path
):
    training = mlflow_registry[1]
    copy = registry_copy(mlflow_registry, tmp_path)
    v2, _ = register_small_model(copy, read_pricing(pricing_csv), "next", trees=10)
    env = {**bridge_env, "RENTALSTREAM_REGISTRY_TRACKING_URI": copy, "RENTALSTREAM_REGISTRY_POLL_SECONDS": "0.5"}
    url = f"http://127.0.0.1:{env['RENTALSTREAM_BRIDGE_PORT']}"
    log = tmp_path / "bridge.log"
    with service_process("bridge", env, log) as bridge:
        services.wait_ready("bridge", f"{url}/ready", bridge.pid, time.monotonic() + 120, str(log))
        assert httpx.get(f"{url}/ready").json()["champion_version"] == training.champion_version
        cli(env, "promote", v2)
        wait_for(
            lambda: httpx.get(f"{url}/ready").json()["champion_version"] == v2,
            30,
            f"the bridge to report v{v2}",
            bridge,
            log,
        )
        cli(env, "promote", training.champion_version)  # a rollback is followed too
        wait_for(
            lambda: httpx.get(f"{url}/ready").json()["champion_version"] == training.champion_version,
            30,
            "the bridge to report the rollback",
            bridge,
            log,
        )
