"""Failures that are visible, measured on the real entry points (subprocesses, as a user runs them).

- a QuestDB that cannot be reached fails ``python -m bytewax.run flows.features`` in seconds, in one line naming
  ``CCF_QUESTDB__HTTP_URL``, exit code 2 (the traceback only with ``CCF_DEBUG=1``);
- SIGINT and SIGTERM end the features job at the next batch: exit 0, its summary printed, no panic or traceback,
  and the summary's feature count is what the store holds;
- against the real QuestDB: N problems with the same time are N health rows, and a replay adds none.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ccf.engine import EngineOut
from ccf.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]
SUMMARY = re.compile(r"ccf features: (\d+) feature rows, (\d+) predictions, (\d+) scores, (\d+) health rows")


def _env(**ccf: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env.update(ccf)
    return env


def _features_job(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.features"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://ccf-no-such-host.invalid:9000", "127.0.0.1:9000"])
def test_an_unreachable_questdb_fails_the_features_job_in_one_line(url: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    job = _features_job(_env(CCF_QUESTDB__HTTP_URL=url, CCF_STOP_AFTER="5", CCF_RUN_DIR=str(tmp_path)))
    _, err = job.communicate(timeout=60)
    took = time.monotonic() - t0
    lines = err.strip().splitlines()
    assert job.returncode == 2, err
    assert took < 10, took
    assert len(lines) == 1 and lines[0].startswith("ccf: error: ") and "CCF_QUESTDB__HTTP_URL" in lines[0], err
    assert "Traceback" not in err and "panicked" not in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    job = _features_job(_env(CCF_QUESTDB__HTTP_URL="http://127.0.0.1:1", CCF_DEBUG="1", CCF_RUN_DIR=str(tmp_path)))
    _, err = job.communicate(timeout=60)
    assert job.returncode == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("ccf: error: ")


def test_the_ccf_command_reports_bad_settings_in_one_line() -> None:
    ccf = Path(sys.executable).with_name("ccf")
    res = subprocess.run([str(ccf), "config"], env=_env(CCF_FEATURES__WINDOW_S="-1"), capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "CCF_FEATURES__WINDOW_S" in res.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_features_job_cleanly_with_its_summary(sig: signal.Signals, tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    job = _features_job(_env(CCF_RUN_DIR=str(tmp_path)))  # `make run`: synthetic venue in real time, embedded store
    deadline = time.monotonic() + 60
    while not store.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.1)
    time.sleep(3)  # a few seconds of data
    sent = time.monotonic()
    job.send_signal(sig)
    out, err = job.communicate(timeout=30)
    took = time.monotonic() - sent
    assert job.returncode == 0, err[-3000:]
    assert took < 5, took
    assert "Traceback" not in err and "panicked" not in err, err[-3000:]
    assert f"stop requested ({sig.name})" in err
    found = SUMMARY.search(out)
    assert found is not None, out
    features, predictions, scores, health = (int(g) for g in found.groups())
    assert features > 0
    con = duckdb.connect(str(store), read_only=True)
    try:
        held = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone() for t in ("features", "predictions",
                                                                                 "scores", "health")}
    finally:
        con.close()
    assert held == {"features": (features,), "predictions": (predictions,), "scores": (scores,),
                    "health": (health,)}


def _sql(settings: Settings, query: str) -> list[list[Any]]:
    import httpx

    body: dict[str, Any] = httpx.get(f"{settings.questdb.http_url}/exec", params={"query": query}, timeout=30).json()
    assert "error" not in body, body
    rows: list[list[Any]] = body.get("dataset", [])
    return rows


def test_questdb_health_counts_problems_and_a_replay_adds_none(settings: Settings) -> None:
    from ccf.store.questdb_store import QuestDBWriter
    from ccf.store.sinks import health_rows
    from ccf.store.tables import HEALTH

    prefix = f"failures_{uuid.uuid4().hex}_"
    name = prefix + "health"
    writer = QuestDBWriter.from_settings(settings.questdb.model_copy(update={"table_prefix": prefix}), [HEALTH])
    try:
        out = EngineOut()
        out.problems += [{"ts": 1_700_000_000_000_000_000, "venue": "v", "symbol": "A", "error": "ParseError",
                          "reason": "bad", "raw": f"frame {i % 3}"} for i in range(7)]  # identical ones too
        rows = health_rows(out)
        for batch in (rows, rows, rows[:4]):  # written, replayed, replayed cut into a smaller batch
            writer.upsert("health", batch)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the WAL of all three writes is applied
            txns = _sql(settings, f"SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = '{name}'")
            if txns and txns[0][0] == txns[0][1] >= 3:
                break
            time.sleep(0.2)
        assert _sql(settings, f'SELECT count(), sum(value) FROM "{name}"') == [[7, 7.0]]
    finally:
        writer.close()
        _sql(settings, f'DROP TABLE IF EXISTS "{name}"')
