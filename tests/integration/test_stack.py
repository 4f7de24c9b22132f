"""``ccf stack`` as users run it: the whole topology from a real capture, a role killed and restarted, nothing left.

``ccf stack up --processes 2 --replay <real ETHUSDT capture> --speed 3`` starts its own Kafka, QuestDB and MLflow,
the venue server replaying the capture, ingest, the features job as a 2-process Bytewax cluster with recovery, the
trainer, predictor and Panel app under supervisord, and returns once every role is healthy (its own deadline,
120 s). Then: QuestDB fills with feature rows of the capture's symbol; one features process is SIGKILLed (its peer
panics, as a Bytewax cluster does): supervisord starts both again, ``status --json`` counts the restarts with the
last error, the event log and the ``health`` table in QuestDB (through Kafka and the restarted features job) hold
the ``role_died`` record; ``ccf stack down`` leaves no process of the stack and frees its ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccf.services.process import port_is_free
from ccf.stack.supervisor import stack_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("CCF_DATA_DIR", ROOT.parent / "shared" / "data"))
CAPTURE = DATA / "hftbacktest_binance_raw_ws" / "spot_ethusdt_20240808.gz"


def _ccf(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    ccf = Path(sys.executable).with_name("ccf")
    return subprocess.run([str(ccf), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _status(run_dir: Path) -> dict[str, Any]:
    out = _ccf("stack", "status", "--json", "--run-dir", str(run_dir), timeout=120)
    status: dict[str, Any] = json.loads(out.stdout)
    return status


def _sql(url: str, query: str) -> list[list[Any]]:
    body = httpx.get(f"{url}/exec", params={"query": query}, timeout=10).json()
    rows: list[list[Any]] = body.get("dataset", [])
    return rows


def _until(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(1.0)


@pytest.fixture
def run_dir(tmp_path: Path) -> Any:
    run = tmp_path / "stack"
    yield run
    _ccf("stack", "down", "--run-dir", str(run), timeout=180)  # whatever the test did, stop it all


def test_stack_up_fills_questdb_restarts_a_killed_role_and_down_leaves_nothing(run_dir: Path) -> None:
    assert CAPTURE.is_file(), f"{CAPTURE} is missing (CCF_DATA_DIR={DATA})"
    up = _ccf("stack", "up", "--run-dir", str(run_dir), "--processes", "2", "--speed", "3", "--replay", str(CAPTURE))
    assert up.returncode == 0, up.stderr[-3000:]
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", up.stdout, re.MULTILINE))
    url = exports["CCF_QUESTDB__HTTP_URL"].strip("'")

    status = _status(run_dir)
    roles = status["roles"]
    assert set(roles) == {"kafka", "questdb", "mlflow", "venue", "ingest", "features-0", "features-1", "trainer",
                          "predictor", "app"}
    assert all(r["healthy"] for r in roles.values()), {n: r["detail"] for n, r in roles.items() if not r["healthy"]}
    assert all(r["pid"] for r in roles.values())
    ports = [int(p) for p in re.findall(r":(\d+)", " ".join(exports.values()))]

    symbols = _until(lambda: _sql(url, "SELECT DISTINCT symbol FROM features"), 120, "feature rows in QuestDB")
    assert [s[0] for s in symbols] == ["ETH-USDT"]

    # a process of the cluster dies: both are started again, and the stack says so
    victim = roles["features-1"]["pid"]
    before = _sql(url, "SELECT count() FROM features")[0][0]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        s = _status(run_dir)["roles"]
        f1 = s["features-1"]
        done = f1["state"] == "RUNNING" and f1["pid"] != victim and f1["restarts"] >= 1 and f1["healthy"]
        return s if done and s["features-0"]["healthy"] else None

    after = _until(restarted, 180, "features-1 restarted and healthy")
    assert after["features-1"]["last_error"]
    events = [json.loads(line) for line in (run_dir / "stack" / "events.jsonl").read_text().splitlines()]
    assert any(e["role"] == "features-1" and e["event"] == "died" for e in events)
    died = _until(lambda: _sql(url, "SELECT symbol, value FROM health WHERE venue = 'stack' AND kind = 'role_died'"),
                  120, "the role_died health record in QuestDB")
    assert ["features-1", 1.0] in [list(r) for r in died]
    _until(lambda: _sql(url, "SELECT count() FROM features")[0][0] > before, 120, "rows after the restart")

    logs = _ccf("stack", "logs", "features-1", "--run-dir", str(run_dir), "-n", "20")
    assert logs.returncode == 0 and logs.stdout.strip()

    down = _ccf("stack", "down", "--run-dir", str(run_dir), timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]
    assert stack_processes(run_dir.resolve()) == []
    assert _until(lambda: all(port_is_free(p) for p in ports), 30, "the stack's ports free")
    assert _ccf("stack", "status", "--run-dir", str(run_dir)).returncode == 1
