"""MLflow's basic-auth app for real, configured by docker/mlflow-auth.ini as compose runs it: anonymous requests are
refused, the trainer's and predictor's client logs in with the CCF settings, a user nobody granted anything sees
nothing. Its own server (temporary sqlite stores, a free loopback port), started once for the module."""

from __future__ import annotations

import configparser
import os
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from ccf.services.mlflow_server import server_command
from ccf.services.process import LOOPBACK, exit_code, free_ports, log_tail, spawn, stop_group, wait_for
from ccf.settings import Settings
from tests.tiny_tft import forecasts, kline_rows, tiny_tft

pytestmark = [
    pytest.mark.integration,
    # pytorch-forecasting's encoders call torch.from_numpy on pandas 3's read-only (copy-on-write) arrays
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning"),
]

COMPOSE_INI = Path(__file__).resolve().parents[2] / "docker" / "mlflow-auth.ini"


@dataclass(frozen=True)
class AuthServer:
    url: str
    username: str
    password: str


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    home = tmp_path_factory.mktemp("mlflow-auth")
    (home / "artifacts").mkdir()
    ini = configparser.ConfigParser()
    ini.read(COMPOSE_INI)
    ini["mlflow"]["database_uri"] = f"sqlite:///{(home / 'basic_auth.db').as_posix()}"  # compose: on /data
    with (home / "basic_auth.ini").open("w") as f:
        ini.write(f)
    port = free_ports(1)[0]
    server = AuthServer(f"http://{LOOPBACK}:{port}", "ccf-test", secrets.token_urlsafe(16))
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(home / "basic_auth.ini"),
           "MLFLOW_AUTH_ADMIN_USERNAME": server.username, "MLFLOW_AUTH_ADMIN_PASSWORD": server.password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = home / "mlflow.out"
    pid = spawn([*server_command(sys.executable, home, port), "--app-name", "basic-auth"], log_path=log, cwd=home,
                env=env)
    try:
        if not wait_for(lambda: _health(server) or exit_code(pid) is not None, timeout=120):
            pytest.fail(f"mlflow basic-auth server not up in 120 s: {log_tail(log)}")
        if exit_code(pid) is not None:
            pytest.fail(f"mlflow basic-auth server exited {exit_code(pid)}: {log_tail(log)}")
        yield server
    finally:
        stop_group(pid, name="mlflow basic-auth")


def _health(server: AuthServer) -> bool:
    try:
        return httpx.get(f"{server.url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _search(server: AuthServer, auth: tuple[str, str] | None) -> int:
    resp = httpx.get(f"{server.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, auth=auth,
                     timeout=10)
    return resp.status_code


def test_anonymous_and_wrong_password_requests_are_refused(auth_server: AuthServer) -> None:
    assert _search(auth_server, None) == 401
    assert _search(auth_server, (auth_server.username, "not-the-password")) == 401
    assert _search(auth_server, (auth_server.username, auth_server.password)) == 200


def test_our_client_logs_in_with_the_settings_and_round_trips_a_model(auth_server: AuthServer,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from models.registry import (
        ARTIFACT_TAG,
        ARTIFACT_VALUE,
        configure_auth,
        experiment_id,
        load_version,
        open_client,
        register,
    )

    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(var, "")  # restored after the test: configure_auth sets the process's environment
    tag = uuid.uuid4().hex[:8]
    s = Settings(_env_prefix="CCF_TEST_NOTHING_", mlflow={
        "tracking_uri": auth_server.url, "experiment": f"auth-{tag}", "model_name": f"auth-{tag}",
        "username": auth_server.username, "password": auth_server.password})
    configure_auth(s)
    client = open_client(s)
    tiny = tiny_tft(kline_rows("2025-11-01"))
    run = client.create_run(experiment_id(client, s), tags={ARTIFACT_TAG: ARTIFACT_VALUE})
    version = register(client, s, run.info.run_id, tiny.model, tiny.spec, pd.DataFrame({"a": [1.0]}), None)
    loaded = load_version(client, s, s.mlflow.model_name, version)
    assert np.array_equal(forecasts(loaded.model, tiny), forecasts(tiny.model, tiny))

    # a user nobody granted anything (default_permission NO_PERMISSIONS) cannot read it
    other = ("someone-else", secrets.token_urlsafe(16))
    admin = (auth_server.username, auth_server.password)
    made = httpx.post(f"{auth_server.url}/api/2.0/mlflow/users/create", auth=admin, timeout=10,
                      json={"username": other[0], "password": other[1]})
    assert made.status_code == 200, made.text
    seen = httpx.get(f"{auth_server.url}/api/2.0/mlflow/registered-models/get", auth=other, timeout=10,
                     params={"name": s.mlflow.model_name})
    assert seen.status_code == 403
