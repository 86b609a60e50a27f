import json

import pytest

from runtime.settings import Settings, StackNotRunning, redact_url


def test_environment_overrides_and_embedded_fallback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "stack.json").write_text(json.dumps({"kafka_bootstrap": "127.0.0.1:1"}))
    monkeypatch.setenv("RENTALSTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", "postgresql://u:secret@db:5432/x")
    settings = Settings()
    assert settings.resolved_kafka_bootstrap() == "127.0.0.1:1"
    assert settings.resolved_database_url() == "postgresql://u:secret@db:5432/x"
    with pytest.raises(StackNotRunning, match="rentalstream up"):
        settings.resolved_mlflow_tracking_uri()


def test_dotenv_file_is_honoured(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RENTALSTREAM_TOPIC_PARTITIONS=7\n")
    assert Settings().topic_partitions == 7


def test_passwords_are_redacted():
    assert "secret" not in redact_url("postgresql://u:secret@db:5432/x")


def test_a_heartbeat_as_long_as_the_session_is_refused_with_both_names(monkeypatch):
    monkeypatch.setenv("RENTALSTREAM_KAFKA_SESSION_TIMEOUT_MS", "3000")
    monkeypatch.setenv("RENTALSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS", "3000")
    with pytest.raises(ValueError, match="HEARTBEAT_INTERVAL_MS \\(3000\\) must be below .*SESSION_TIMEOUT_MS"):
        Settings()
    monkeypatch.setenv("RENTALSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS", "1000")
    assert Settings().kafka_heartbeat_interval_ms == 1000


def test_a_service_bound_to_every_interface_is_reached_on_loopback():
    from rentalstream.services import BRIDGE, SCORER

    settings = Settings(_env_file=None, scorer_host="0.0.0.0", scorer_port=9101, bridge_host="bridge", bridge_port=9102)
    assert SCORER.url(settings) == "http://127.0.0.1:9101"  # what `rentalstream probe scorer` asks
    assert BRIDGE.url(settings) == "http://bridge:9102"
