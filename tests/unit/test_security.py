"""Security properties that hold by construction: API keys are kept only as their
SHA-256, every service binds to loopback unless told otherwise, and SQL is never built
from strings."""

import ast
import hashlib
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from producers import bridge
from producers.bridge_clients import add_key
from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ["rentalstream", "schemas", "producers", "scorer", "monitor", "dashboard", "training"]
SQL_CALLS = {"text", "exec_driver_sql", "execute", "executemany"}


def test_keys_are_kept_as_their_sha256_and_a_wrong_one_is_refused_without_an_echo(tmp_path):
    keys = tmp_path / "secrets" / "api-keys"
    key = add_key(keys, "pricing-svc")
    assert len(key) >= 43  # 32 random bytes, URL-safe
    assert key not in keys.read_text() and hashlib.sha256(key.encode()).hexdigest() in keys.read_text()
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600  # readable by the bridge's user alone
    settings = Settings(
        bridge={"api_keys_file": keys},
        kafka={"bootstrap": "127.0.0.1:9"},
        registry={"tracking_uri": "sqlite:///unused.db"},
    )
    client = TestClient(bridge.build_app(settings))  # no lifespan, no broker: the key is checked first
    wrong = key[:-1] + ("x" if key[-1] != "x" else "y")
    for headers in ({"X-API-Key": wrong}, {}):
        answer = client.post("/predict", json={}, headers=headers)
        assert answer.status_code == 401 and key[:-1] not in answer.text, answer.text
        assert answer.headers["WWW-Authenticate"] == "APIKey"


@pytest.mark.parametrize("service", ["scorer", "bridge", "monitor", "dashboard"])
def test_every_service_binds_to_loopback_by_default(service, monkeypatch):
    for name in (f"RENTALSTREAM_{service.upper()}_HOST",):
        monkeypatch.delenv(name, raising=False)
    assert getattr(Settings(_env_file=None), service).host == "127.0.0.1"


def sql_built_from_strings(path: Path) -> list[int]:
    """Lines of calls like text(f"..."), conn.execute("..." + x) or text("...".format(x)) in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        first = node.args[0]
        built = isinstance(
            first, ast.JoinedStr | ast.BinOp
        ) or (  # "...".format(...), not psycopg's sql.SQL(...).format
            isinstance(first, ast.Call)
            and isinstance(first.func, ast.Attribute)
            and first.func.attr == "format"
            and isinstance(first.func.value, ast.Constant)
        )
        if name in SQL_CALLS and built:
            found.append(node.lineno)
    return sorted(found)


def test_sql_is_only_ever_parameterised():
    files = [p for package in PRODUCT for p in (REPO / package).rglob("*.py")]
    assert len(files) > 40
    offenders = [f"{path.relative_to(REPO)}:{line}" for path in files for line in sql_built_from_strings(path)]
    assert offenders == []


def test_the_scan_does_catch_sql_built_from_strings(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        'table = "x"\nconn.execute(text(f"SELECT * FROM {table}"))\nconn.execute("SELECT " + table)\n'
        'conn.execute(text("SELECT * FROM {}".format(table)))\nconn.execute(text("SELECT :n"), {"n": 1})\n'
    )
    assert sql_built_from_strings(sample) == [2, 3, 4]
