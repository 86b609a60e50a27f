"""Security properties that hold by construction: the API key is compared in constant
time, every service binds to loopback unless told otherwise, and SQL is never built
from strings."""

import ast
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from producers import bridge
from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ["rentalstream", "schemas", "producers", "scorer", "monitor", "dashboard", "training"]
SQL_CALLS = {"text", "exec_driver_sql", "execute", "executemany"}


def test_the_api_key_is_compared_with_hmac_compare_digest(monkeypatch):
    compared = []
    real = bridge.hmac.compare_digest

    def spy(given, expected):
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(bridge.hmac, "compare_digest", spy)
    settings = Settings(
        bridge={"api_key": "the-key"},
        kafka={"bootstrap": "127.0.0.1:9"},
        registry={"tracking_uri": "sqlite:///unused.db"},
    )
    client = TestClient(bridge.build_app(settings))  # no lifespan, no broker: the key is checked first
    answer = client.post("/predict", json={}, headers={"X-API-Key": "the-kez"})
    assert answer.status_code == 401 and "the-key" not in answer.text and "the-kez" not in answer.text
    assert compared == [(b"the-kez", b"the-key")]


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
