"""A secret still set to ``change-me`` (docker/.env.example's value) refuses to start the role that uses it: one line
naming the variable, exit code 2. Secrets of sections a role does not use, or that are not in use, do not count."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from ccf.errors import ConfigError
from ccf.settings import Settings, placeholder_secrets, refuse_placeholder_secrets

IN_USE: dict[str, dict[str, Any]] = {
    "kafka": {"bootstrap_servers": "k:9092", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
    "questdb": {"http_url": "http://q:9000"},
    "mlflow": {"tracking_uri": "http://m:5000", "username": "ccf"},
    "app": {"basic_auth_user": "ccf"},
}
SECRETS = [("kafka", "sasl_password", "CCF_KAFKA__SASL_PASSWORD"), ("questdb", "password", "CCF_QUESTDB__PASSWORD"),
           ("mlflow", "password", "CCF_MLFLOW__PASSWORD"), ("app", "basic_auth_password", "CCF_APP__BASIC_AUTH_PASSWORD")]


def _settings(**sections: dict[str, Any]) -> Settings:
    return Settings(_env_prefix="CCF_TEST_NOTHING_", **sections)


@pytest.mark.parametrize(("section", "field", "var"), SECRETS, ids=[s[2] for s in SECRETS])
@pytest.mark.parametrize("value", ["change-me", " Change-Me "])
def test_each_placeholder_secret_is_named(section: str, field: str, var: str, value: str) -> None:
    s = _settings(**{section: {**IN_USE[section], field: value}})
    assert placeholder_secrets(s, IN_USE) == [var]
    with pytest.raises(ConfigError) as err:
        refuse_placeholder_secrets(s, [section])
    assert str(err.value) == f"{var} is still 'change-me': set a real secret (docker/.env) before starting this role"


def test_every_secret_setting_is_covered() -> None:
    from pydantic import BaseModel

    found = set()
    for name, info in Settings.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found |= {(name, f) for f, sub in kind.model_fields.items() if "SecretStr" in str(sub.annotation)}
    assert found == {(s, f) for s, f, _ in SECRETS}


def test_all_are_named_on_one_line_and_real_secrets_pass() -> None:
    s = _settings(questdb={**IN_USE["questdb"], "password": "change-me"},
                  mlflow={**IN_USE["mlflow"], "password": "change-me"})
    with pytest.raises(ConfigError, match=r"^CCF_QUESTDB__PASSWORD, CCF_MLFLOW__PASSWORD are still 'change-me'"):
        refuse_placeholder_secrets(s, ["questdb", "mlflow"])
    refuse_placeholder_secrets(s, ["kafka", "app"])  # sections this role does not use
    good = _settings(questdb={**IN_USE["questdb"], "password": "a-real-one"})
    refuse_placeholder_secrets(good, IN_USE)


def test_a_section_not_in_use_is_not_checked() -> None:
    s = _settings(questdb={"password": "change-me"}, mlflow={"password": "change-me"})  # embedded store and MLflow
    assert placeholder_secrets(s, ["questdb", "mlflow"]) == []


@pytest.mark.parametrize(("argv", "env", "var"), [
    (["predict"], {"CCF_MLFLOW__TRACKING_URI": "http://127.0.0.1:1", "CCF_MLFLOW__PASSWORD": "change-me",
                   "CCF_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "CCF_MLFLOW__PASSWORD"),
    (["predict"], {"CCF_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "CCF_KAFKA__SASL_PASSWORD": "change-me"},
     "CCF_KAFKA__SASL_PASSWORD"),
    (["train", "--every", "1h"], {"CCF_MLFLOW__TRACKING_URI": "http://127.0.0.1:1", "CCF_MLFLOW__PASSWORD": "change-me"},
     "CCF_MLFLOW__PASSWORD"),
    (["train", "--every", "1h"], {"CCF_QUESTDB__HTTP_URL": "http://127.0.0.1:1", "CCF_QUESTDB__PASSWORD": "change-me"},
     "CCF_QUESTDB__PASSWORD"),
], ids=["predict-mlflow", "predict-kafka", "train-mlflow", "train-questdb"])
def test_train_and_predict_refuse_to_start_in_one_line(argv: list[str], env: dict[str, str], var: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from ccf.cli import main

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "argv", ["ccf", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == f"ccf: error: {var} is still 'change-me': set a real secret (docker/.env) before starting this role\n"


def test_a_dataflow_job_refuses_to_start_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from ccf.entry import from_environment

    monkeypatch.setenv("CCF_QUESTDB__HTTP_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("CCF_QUESTDB__PASSWORD", "change-me")
    built = []
    with pytest.raises(SystemExit) as exit_:
        from_environment(built.append)
    assert exit_.value.code == 2 and built == []
    assert capsys.readouterr().err.startswith("ccf: error: CCF_QUESTDB__PASSWORD is still 'change-me'")
