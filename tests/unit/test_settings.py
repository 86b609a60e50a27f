import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from runtime.settings import FORMER_NAMES, Settings, StackNotRunning, redact_url, setting_variables


def test_environment_overrides_and_embedded_fallback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "stack.json").write_text(json.dumps({"kafka_bootstrap": "127.0.0.1:1"}))
    monkeypatch.setenv("RENTALSTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", "postgresql://u:secret@db:5432/x")
    settings = Settings()
    assert settings.resolved_kafka_bootstrap() == "127.0.0.1:1"
    assert settings.resolved_database_url() == "postgresql+psycopg://u:secret@db:5432/x"
    with pytest.raises(StackNotRunning, match="RENTALSTREAM_REGISTRY_TRACKING_URI is not set.*rentalstream up"):
        settings.resolved_mlflow_tracking_uri()


def test_the_stack_file_is_read_once_and_what_up_records_is_used_from_then_on(tmp_path, monkeypatch):
    monkeypatch.setenv("RENTALSTREAM_HOME", str(tmp_path))
    monkeypatch.delenv("RENTALSTREAM_KAFKA_BOOTSTRAP", raising=False)
    (tmp_path / "stack.json").write_text(json.dumps({"kafka_bootstrap": "127.0.0.1:1"}))
    settings = Settings(_env_file=None)
    assert settings.resolved_kafka_bootstrap() == "127.0.0.1:1"
    (tmp_path / "stack.json").write_text(json.dumps({"kafka_bootstrap": "127.0.0.1:2"}))
    assert settings.resolved_kafka_bootstrap() == "127.0.0.1:1"  # one consistent view for the process
    settings.record_stack(settings.stack.model_copy(update={"kafka_bootstrap": "127.0.0.1:3"}))
    assert settings.resolved_kafka_bootstrap() == "127.0.0.1:3"
    assert json.loads((tmp_path / "stack.json").read_text()) == {
        "kafka_bootstrap": "127.0.0.1:3",
        "pids": {},
        "services": {},
    }
    settings.record_stack(None)
    assert not (tmp_path / "stack.json").exists() and settings.stack is None


def test_every_setting_is_read_from_its_group_and_field_name(monkeypatch):
    monkeypatch.setenv("RENTALSTREAM_SCORER_MAX_RECORDS", "17")
    monkeypatch.setenv("RENTALSTREAM_MONITOR_MAX_RECORDS", "18")
    monkeypatch.setenv("RENTALSTREAM_KAFKA_SESSION_TIMEOUT_MS", "20000")
    monkeypatch.setenv("RENTALSTREAM_DASHBOARD_WEBSOCKET_ORIGINS", '["dash.example.com"]')
    settings = Settings(_env_file=None)
    assert (settings.scorer.max_records, settings.monitor.max_records) == (17, 18)
    assert settings.kafka.session_timeout_ms == 20000
    assert settings.dashboard.websocket_origins == ["dash.example.com"]
    variables = setting_variables()
    assert variables["RENTALSTREAM_SCORER_MAX_RECORDS"] == "scorer.max_records"
    assert variables["RENTALSTREAM_DATA_DIR"] == "data_dir"
    assert not set(FORMER_NAMES) & set(variables)


@pytest.mark.parametrize(
    ("former", "value", "read"),
    [
        ("RENTALSTREAM_MLFLOW_TRACKING_URI", "http://mlflow:5000", lambda s: s.registry.tracking_uri),
        ("RENTALSTREAM_TOPIC_PARTITIONS", "7", lambda s: s.kafka.topic_partitions),
        ("RENTALSTREAM_API_KEY", "k", lambda s: s.bridge.api_key.get_secret_value()),
        ("RENTALSTREAM_MODEL_CACHE_DIR", "/tmp/compiled", lambda s: str(s.scorer.model_cache_dir)),
    ],
)
def test_a_former_name_is_still_read_and_its_grouped_name_wins(former, value, read, monkeypatch):
    group, field = FORMER_NAMES[former]
    grouped = f"RENTALSTREAM_{group}_{field}".upper()
    monkeypatch.delenv(grouped, raising=False)
    monkeypatch.setenv(former, value)
    assert str(read(Settings(_env_file=None))) == value
    newer = "8" if field == "topic_partitions" else "other"
    monkeypatch.setenv(grouped, newer)
    assert str(read(Settings(_env_file=None))) == newer


def test_dotenv_file_is_honoured_under_both_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "RENTALSTREAM_KAFKA_TOPIC_PARTITIONS=7\nRENTALSTREAM_MLFLOW_TRACKING_URI=http://m:1\n"
    )
    settings = Settings()
    assert (settings.kafka.topic_partitions, settings.registry.tracking_uri) == (7, "http://m:1")


def test_a_database_url_is_normalised_once_and_a_foreign_one_refused_at_start(monkeypatch):
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", "postgres://u@db/x")
    assert Settings(_env_file=None).database.url == "postgresql+psycopg://u@db/x"
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", "mysql://u@db/x")
    with pytest.raises(ValidationError, match="must be a postgresql:// URL"):
        Settings(_env_file=None)


def test_passwords_are_redacted():
    assert "secret" not in redact_url("postgresql://u:secret@db:5432/x")


def test_a_heartbeat_as_long_as_the_session_is_refused_with_both_names(monkeypatch):
    monkeypatch.setenv("RENTALSTREAM_KAFKA_SESSION_TIMEOUT_MS", "3000")
    monkeypatch.setenv("RENTALSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS", "3000")
    with pytest.raises(ValueError, match="HEARTBEAT_INTERVAL_MS \\(3000\\) must be below .*SESSION_TIMEOUT_MS"):
        Settings()
    monkeypatch.setenv("RENTALSTREAM_KAFKA_HEARTBEAT_INTERVAL_MS", "1000")
    assert Settings().kafka.heartbeat_interval_ms == 1000


def test_a_service_bound_to_every_interface_is_reached_on_loopback():
    from rentalstream.services import BRIDGE, SCORER

    settings = Settings(
        _env_file=None, scorer={"host": "0.0.0.0", "port": 9101}, bridge={"host": "bridge", "port": 9102}
    )
    assert SCORER.url(settings) == "http://127.0.0.1:9101"  # what `rentalstream probe scorer` asks
    assert BRIDGE.url(settings) == "http://bridge:9102"


def test_the_operations_guide_lists_every_setting_and_no_other():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    table = guide[guide.index("## Settings") : guide.index("### Renamed settings")]
    documented = set()
    for row in table.splitlines():
        if row.startswith("| `"):  # `RENTALSTREAM_X` / `_Y`: the second is short for RENTALSTREAM_Y
            names = re.findall(r"`(RENTALSTREAM)?(_[A-Z_]+)`", row.split(" | ")[0])
            documented |= {f"RENTALSTREAM{name}" for _, name in names}
    assert documented == set(setting_variables())


def test_any_setting_can_be_read_from_a_file_named_by_its_variable(tmp_path, monkeypatch):
    (tmp_path / "key").write_text("key-from-a-file\n")  # as `echo key > file` writes it
    (tmp_path / "password").write_text("pass word:/@\n")
    (tmp_path / "records").write_text("17")
    monkeypatch.setenv("RENTALSTREAM_BRIDGE_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("RENTALSTREAM_DATABASE_URL", "postgresql://reader@db:5432/x")
    monkeypatch.setenv("RENTALSTREAM_DATABASE_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("RENTALSTREAM_SCORER_MAX_RECORDS_FILE", str(tmp_path / "records"))
    settings = Settings(_env_file=None)
    assert settings.bridge.api_key.get_secret_value() == "key-from-a-file"
    assert settings.scorer.max_records == 17
    # The password goes into the URL, escaped as a URL needs.
    url = make_url(settings.resolved_database_url())
    assert (url.username, url.password, url.host, url.database) == ("reader", "pass word:/@", "db", "x")
    assert "pass word" not in repr(settings) and "pass word" not in str(settings.model_dump())


def test_a_setting_given_both_ways_or_from_a_missing_file_is_refused_by_name(tmp_path, monkeypatch):
    from pydantic_settings import SettingsError

    monkeypatch.setenv("RENTALSTREAM_BRIDGE_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="RENTALSTREAM_BRIDGE_API_KEY_FILE: cannot read .*missing"):
        Settings(_env_file=None)
    (tmp_path / "missing").write_text("k")
    monkeypatch.setenv("RENTALSTREAM_BRIDGE_API_KEY", "k")
    with pytest.raises(SettingsError, match="RENTALSTREAM_BRIDGE_API_KEY and RENTALSTREAM_BRIDGE_API_KEY_FILE"):
        Settings(_env_file=None)


def test_a_wrong_setting_stops_the_command_with_its_name_and_not_its_value(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "RENTALSTREAM_HOME": str(tmp_path)}
    env["RENTALSTREAM_DATABASE_URL"] = "mysql://u:pw-8d1c-secret@db/x"
    cli = [sys.executable, "-c", "from rentalstream.cli import run; run()", "down"]
    refused = subprocess.run(cli, env=env, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert "RENTALSTREAM_DATABASE_URL" in refused.stdout and "pw-8d1c-secret" not in refused.stdout + refused.stderr


def test_sasl_ssl_needs_a_login_and_reads_its_password_from_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("RENTALSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RENTALSTREAM_KAFKA_SASL_USERNAME", "scorer")
    with pytest.raises(ValidationError, match="RENTALSTREAM_KAFKA_SASL_PASSWORD"):
        Settings(_env_file=None)
    (tmp_path / "password").write_text("pa55word\n")
    monkeypatch.setenv("RENTALSTREAM_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("RENTALSTREAM_KAFKA_CA_FILE", str(tmp_path / "ca.pem"))
    kafka = Settings(_env_file=None).kafka
    assert (kafka.sasl_username, kafka.sasl_password.get_secret_value()) == ("scorer", "pa55word")
    assert "pa55word" not in repr(kafka)


def test_a_ca_file_that_cannot_be_read_is_named_at_start(tmp_path):
    from runtime.kafka.security import client_options
    from runtime.settings import KafkaSettings

    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_username="scorer", sasl_password="x", ca_file=tmp_path / "missing.pem"
    )
    with pytest.raises(ValueError, match="RENTALSTREAM_KAFKA_CA_FILE: cannot read CAs from .*missing.pem"):
        client_options(kafka)
    assert client_options(KafkaSettings()) == {}  # plaintext: aiokafka's defaults


def test_the_stack_runs_the_retrainer_only_when_retraining_is_asked_for(monkeypatch):
    from rentalstream.services import ALL, RETRAINER, of_stack

    monkeypatch.delenv("RENTALSTREAM_RETRAIN", raising=False)
    assert of_stack(Settings(_env_file=None)) == ALL and RETRAINER not in ALL
    monkeypatch.setenv("RENTALSTREAM_RETRAIN", "challenger")
    assert of_stack(Settings(_env_file=None)) == (*ALL, RETRAINER)
    monkeypatch.setenv("RENTALSTREAM_RETRAIN", "always")
    with pytest.raises(ValidationError, match="RETRAIN|retrain"):
        Settings(_env_file=None)
