"""``ccf services`` as a user runs it: exports, reuse, ``status --json`` shape, and a full up/down/up cycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ccf.services.process import port_is_free, port_open
from ccf.services.state import load_state

if TYPE_CHECKING:
    from tests.conftest import Services

pytestmark = pytest.mark.integration


def _ccf(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("ccf")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from ccf.cli import main; main()"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _exports(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        assert line.startswith("export "), line
        key, _, value = line.removeprefix("export ").partition("=")
        out[key] = value
    return out


def _assert_status_shape(payload: dict[str, Any]) -> None:
    assert list(payload) == ["kafka", "questdb", "mlflow"]
    assert set(payload["kafka"]) == {"bootstrap_servers", "version"}
    assert set(payload["questdb"]) == {"http_url", "pg_port", "ilp_http_url", "version"}
    assert set(payload["mlflow"]) == {"tracking_uri"}
    host, port = payload["kafka"]["bootstrap_servers"].split(":")
    assert host == "127.0.0.1"
    assert port_open(int(port))
    assert payload["kafka"]["version"].startswith("4.")
    assert payload["questdb"]["version"].startswith("9.")
    assert isinstance(payload["questdb"]["pg_port"], int)
    assert port_open(payload["questdb"]["pg_port"])
    assert payload["questdb"]["ilp_http_url"] == payload["questdb"]["http_url"]
    for url in (payload["questdb"]["http_url"], payload["mlflow"]["tracking_uri"]):
        assert url.startswith("http://127.0.0.1:")
        assert port_open(int(url.rsplit(":", 1)[1]))


def _matches(exports: dict[str, str], payload: dict[str, Any]) -> None:
    assert exports == {
        "CCF_KAFKA__BOOTSTRAP_SERVERS": payload["kafka"]["bootstrap_servers"],
        "CCF_QUESTDB__HTTP_URL": payload["questdb"]["http_url"],
        "CCF_QUESTDB__ILP_HTTP_URL": payload["questdb"]["ilp_http_url"],
        "CCF_QUESTDB__PG_PORT": str(payload["questdb"]["pg_port"]),
        "CCF_MLFLOW__TRACKING_URI": payload["mlflow"]["tracking_uri"],
    }


def test_up_reuses_the_session_services_and_status_has_the_documented_shape(services: Services) -> None:
    if services.run_dir is None:
        pytest.skip("services came from the environment and their run dir is unknown")
    run_dir = str(services.run_dir)
    pids = {n: r.pid for n, r in load_state(services.run_dir).services.items()}
    up = _ccf("services", "up", "--run-dir", run_dir)
    assert up.returncode == 0, up.stderr
    exports = _exports(up.stdout)
    assert {k: v for k, v in services.env.items() if k in exports} == exports
    assert {n: r.pid for n, r in load_state(services.run_dir).services.items()} == pids, "up restarted something"
    status = _ccf("services", "status", "--run-dir", run_dir, "--json")
    assert status.returncode == 0, status.stderr
    payload = json.loads(status.stdout)
    _assert_status_shape(payload)
    _matches(exports, payload)
    table = _ccf("services", "status", "--run-dir", run_dir)
    assert table.returncode == 0
    assert table.stdout.count("running") == 3


def test_up_down_up_cycle_in_a_fresh_run_dir(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "svc")
    try:
        t0 = time.monotonic()
        first = _ccf("services", "up", "--run-dir", run_dir)
        assert first.returncode == 0, first.stderr
        cold_s = time.monotonic() - t0
        exports = _exports(first.stdout)
        status = _ccf("services", "status", "--run-dir", run_dir, "--json")
        assert status.returncode == 0, status.stderr
        payload = json.loads(status.stdout)
        _assert_status_shape(payload)
        _matches(exports, payload)

        again = _ccf("services", "up", "--run-dir", run_dir)
        assert again.returncode == 0
        assert _exports(again.stdout) == exports

        records = load_state(Path(run_dir)).services
        down = _ccf("services", "down", "--run-dir", run_dir)
        assert down.returncode == 0, down.stderr
        assert all(port_is_free(p) for r in records.values() for p in r.ports.values())
        gone = _ccf("services", "status", "--run-dir", run_dir, "--json")
        assert gone.returncode == 1
        assert json.loads(gone.stdout) == {}
        assert _ccf("services", "down", "--run-dir", run_dir).returncode == 0  # nothing running: no-op

        t0 = time.monotonic()
        second = _ccf("services", "up", "--run-dir", run_dir)
        assert second.returncode == 0, second.stderr
        warm_s = time.monotonic() - t0
        assert _exports(second.stdout) == exports, "free previous ports are reused"
        print(f"cold up {cold_s:.1f} s, up after down {warm_s:.1f} s")
    finally:
        _ccf("services", "down", "--run-dir", run_dir)
