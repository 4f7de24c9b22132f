from __future__ import annotations

from pathlib import Path

import pytest

from ccf.errors import ConfigError
from ccf.settings import Settings, load_settings


def test_defaults_are_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert not s.kafka.enabled
    assert not s.questdb.enabled
    assert not s.mlflow.enabled
    assert s.stop_after is None
    assert s.data_dir == Path("../shared/data")
    assert s.venues.source == "synthetic"
    assert s.forecast.horizons == [1, 5, 10, 20]


def test_nested_env_and_top_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCF_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("CCF_STOP_AFTER", "12.5")
    monkeypatch.setenv("CCF_DATA_DIR", "/data/x")
    monkeypatch.setenv("CCF_FORECAST__HORIZONS", "[5, 1, 5]")
    monkeypatch.setenv("CCF_VENUES__SYMBOLS", '["BTC-USDT"]')
    s = load_settings()
    assert s.kafka.enabled and s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.client_config()["bootstrap.servers"] == "127.0.0.1:9092"
    assert s.stop_after == 12.5
    assert s.data_dir == Path("/data/x")
    assert s.forecast.horizons == [1, 5]
    assert s.venues.symbols == ["BTC-USDT"]


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CCF_STOP_AFTER", "-3"),
        ("CCF_FEATURES__WINDOW_S", "soon"),
        ("CCF_QUESTDB__PG_PORT", "70000"),
        ("CCF_FORECAST__HORIZONS", "[0]"),
        ("CCF_VENUES__SOURCE", "mtgox"),
        ("CCF_FORECAST__MODELS", '["nope"]'),
        ("CCF_FORECAST__MODELS", "[]"),
        ("CCF_FORECAST__QUANTILES", "[0.9, 0.1]"),
        ("CCF_FORECAST__QUANTILES", "[0.1, 1.0]"),
        ("CCF_FEATURES__DEPTH_LEVELS", "[0, 5]"),
        ("CCF_LOG_LEVEL", "verbose"),
        ("CCF_KAFKA__TOPIC_PREFIX", "my topics/"),
        ("CCF_QUESTDB__TABLE_PREFIX", "a-b"),
        ("CCF_VENUES__SYMBOLS", '["BTCUSDT"]'),
    ],
)
def test_validation_error_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load_settings()


def test_secrets_hidden_in_repr_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCF_QUESTDB__PASSWORD", "s3cr3t-qdb")
    monkeypatch.setenv("CCF_KAFKA__SASL_PASSWORD", "s3cr3t-kafka")
    monkeypatch.setenv("CCF_KAFKA__SASL_USERNAME", "me")
    s = load_settings()
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "s3cr3t" not in text
    assert s.questdb.password.get_secret_value() == "s3cr3t-qdb"
    assert s.kafka.client_config()["sasl.password"] == "s3cr3t-kafka"


def test_settings_object_is_typed() -> None:
    s = Settings(features={"window_s": "3"})
    assert s.features.window_s == 3.0


def test_validated_values_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCF_LOG_LEVEL", "debug")
    monkeypatch.setenv("CCF_VENUES__SYMBOLS", '["eth-usdt"]')
    monkeypatch.setenv("CCF_FEATURES__DEPTH_LEVELS", "[10, 1, 5, 5]")
    s = load_settings()
    assert (s.log_level, s.venues.symbols, s.features.depth_levels) == ("DEBUG", ["ETH-USDT"], [1, 5, 10])
