"""`ccf demo` on a fresh directory: synthetic venue -> features -> baselines -> TFT -> forecasts -> scores -> app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_runs_the_whole_loop_and_serves_the_app(tmp_path: Path) -> None:
    port = _free_port()
    store = tmp_path / "store.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    ccf = Path(sys.executable).parent / "ccf"
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen(
        [str(ccf), "demo", "--speed", "50", "--tft-after", "300", "--tft-epochs", "1",
         "--port", str(port), "--store", str(store)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        page = ""
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            text = (tmp_path / "demo.log").read_text()
            if "forecasting" in text and not page:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
            if page and "TFT version" in text:
                break
            time.sleep(1)
        assert "<title>CCF live</title>" in page
        time.sleep(10)  # the market goes on (50x): the TFT forecasts the next windows and they get scored
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()
    text = (tmp_path / "demo.log").read_text()
    assert "TFT version" in text and "forecasting" in text, text[-3000:]
    con = duckdb.connect(str(store), read_only=True)
    models = {m for (m,) in con.execute("select distinct model from predictions").fetchall()}
    assert {"naive", "ewma", "river_lr", "river_ts", "tft"} <= models
    assert con.execute("select count(*) from scores where model = 'tft' and n > 0").fetchone()[0] > 0
    n, distinct = con.execute("select count(*), count(distinct (symbol, window_start)) from features").fetchone()
    assert n == distinct and n >= 600
