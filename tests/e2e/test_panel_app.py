"""The Panel app in a real browser: served by ``panel serve`` over an embedded store that the real features flow fills.

The first features run (60 s of the synthetic venue) fills the store; what that run cannot make is added the way
its writers would (a TFT's forecasts and scores whose version the real MLflow registry's gate refused, websocket
reconnects and Kafka consumer lag in the health table, news items), and five windows of one symbol are taken out;
the app is served on a free port; headless Chromium (Debian's, driven by Playwright) loads it and finds live
numbers, both symbols' windows, the gap (the chart's line breaks there), errors in bps, the "not promoted" label,
the health groups and the news; a second features run then appends while the app polls (it holds the DuckDB write
lock, so the app reads copies), and the page must show a later window. A screenshot is kept in
``test-artifacts/panel_app.png``. ``ccf app`` is also checked for its login, for finding the demo's store, and for
refusing to be exposed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from bytewax.testing import run_main

from ccf.settings import Settings
from ccf.store.duckdb_store import DuckDBStore
from ccf.store.sinks import all_tables
from flows.features import build_flow
from tests.conftest import Services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NUMBER = re.compile(r"^-?[\d,]+\.\d+$")
S = 1_000_000_000
T0 = 1_704_067_200 * S  # the synthetic venue's first event
GAP = range(20, 25)  # windows of BTC-USDT taken out of the store


def _refused_version(tracking_uri: str, name: str) -> str:
    """A version of ``name`` in the real registry, tagged the way ``ccf train`` tags one its gate refused."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model(name)
    version = str(client.create_model_version(name, source="s3://nowhere/model", run_id=None).version)
    client.set_model_version_tag(name, version, "ccf.gate", "refuse")
    return version


def _add_what_the_run_cannot_make(store: Path, version: str) -> None:
    db = DuckDBStore(store, all_tables(Settings(store={"path": store})))
    try:
        preds, scores = [], []
        for i in range(40, 60):
            preds.append({"issued_at": T0 + i * S, "target_time": T0 + (i + 1) * S, "venue": "synthetic",
                          "symbol": "BTC-USDT", "model": "tft", "model_version": version, "horizon_steps": 1,
                          "horizon_s": 1.0, "value": 0.0, "q10": -0.0002, "q50": 0.0, "q90": 0.0002})
            scores.append({"window_end": T0 + (i + 1) * S, "venue": "synthetic", "symbol": "BTC-USDT", "model": "tft",
                           "horizon_steps": 1, "n": i, "mae": 0.00004321, "rmse": 0.00006, "hit_rate": 0.5,
                           "pinball": 0.00001, "coverage": 0.8, "skill": 0.02})
        db.upsert("predictions", preds)
        db.upsert("scores", scores)
        db.upsert("health", [
            {"ts": T0 + 10 * S, "venue": "synthetic", "symbol": "", "kind": "disconnected", "value": 1.0,
             "detail": "", "seq": 1},
            {"ts": T0 + 11 * S, "venue": "synthetic", "symbol": "", "kind": "stalled", "value": 1.0, "detail": "",
             "seq": 2},
            {"ts": T0 + 12 * S, "venue": "kafka", "symbol": "ccf.book:0", "kind": "consumer_lag", "value": 900.0,
             "detail": "", "seq": 3},
            {"ts": T0 + 22 * S, "venue": "kafka", "symbol": "ccf.book:0", "kind": "consumer_lag", "value": 12.0,
             "detail": "", "seq": 4},
        ])
        db.upsert("news", [
            {"fetched": T0 + 30 * S, "id": "n1", "feed": "coindesk", "title": "Bitcoin rallies past a round number",
             "link": "https://example.org/1", "published": T0, "sentiment": 0.6, "bases": "BTC"},
            {"fetched": T0 + 40 * S, "id": "n2", "feed": "decrypt", "title": "Ether slips", "link": "",
             "published": None, "sentiment": -0.2, "bases": "ETH"},
        ])
    finally:
        db.close()
    con = duckdb.connect(str(store))
    con.execute(f"DELETE FROM features WHERE symbol = 'BTC-USDT' AND window_start >= {T0 + GAP[0] * S} "
                f"AND window_start <= {T0 + GAP[-1] * S}")
    con.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(store: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env.update({"CCF_STORE__PATH": str(store), "CCF_APP__POLL_INTERVAL_S": "0.5", **extra})
    return env


@pytest.fixture
def served_app(tmp_path: Path, services: Services) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    store = tmp_path / "store.duckdb"
    run_main(build_flow(Settings(stop_after=60, venues={"speed": 0}, store={"path": store})))
    model = f"ccf-tft-{uuid.uuid4().hex[:8]}"
    _add_what_the_run_cannot_make(store, _refused_version(services.mlflow_tracking_uri, model))
    port = _free_port()
    log = (tmp_path / "panel.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "panel"), "serve", str(ROOT / "dashboards" / "app.py"), "--port", str(port),
         "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=_env(store, CCF_MLFLOW__TRACKING_URI=services.mlflow_tracking_uri,
                               CCF_MLFLOW__MODEL_NAME=model), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/app"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "panel.log").read_text()[-3000:]
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "panel serve did not answer within 60 s"
            time.sleep(0.3)
        yield url, store, proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _text(page: object, selector: str) -> str:
    return str(page.locator(selector).inner_text(timeout=30_000)).strip()  # type: ignore[attr-defined]


def test_app_shows_live_data_and_updates(served_app: tuple[str, Path, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "needs Debian's Chromium: make browser (apt-get install -y chromium)"
    url, store, server = served_app
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000}
        )
        try:
            page = browser.new_page()
            page.goto(url, wait_until="load", timeout=60_000)
            page.locator("#ccf-mid").wait_for(timeout=60_000)
            # live numbers from the store: the first run ends at 00:01:00 of the synthetic day
            deadline = time.monotonic() + 30
            while not NUMBER.match(_text(page, "#ccf-mid")):
                assert time.monotonic() < deadline, f"no mid shown: {_text(page, '#ccf-mid')!r}"
                time.sleep(0.3)
            assert _text(page, "#ccf-latest") == "2024-01-01 00:01:00"
            assert 62_000 < float(_text(page, "#ccf-mid").replace(",", "")) < 66_000  # BTC-USDT of the synthetic venue (64k)
            board = _text(page, "#ccf-leaderboard")
            assert "river_lr" in board and "ewma" in board and "naive" in board
            assert "MAE (bps)" in board and "0.4321" in board  # four significant digits in bps
            deadline = time.monotonic() + 30  # the registry is asked on the poller's thread
            while "tft v1 (not promoted)" not in _text(page, "#ccf-leaderboard"):
                assert time.monotonic() < deadline, f"no promotion label: {_text(page, '#ccf-leaderboard')}"
                time.sleep(0.3)
            health = _text(page, "#ccf-health")
            assert re.search(r"reconnects\s+2 \(disconnected 1, stalled 1\)", health), health
            assert re.search(r"consumer lag\s+12 messages \(1 partitions\)", health), health
            assert re.search(r"resyncs\s+none recorded", health), health
            # every window of each symbol, the taken-out ones counted as missing, and no line across them
            assert re.search(r"windows synthetic:BTC-USDT\s+55 buffered, 5 missing", health), health
            assert re.search(r"windows synthetic:ETH-USDT\s+60 buffered, 0 missing", health), health
            breaks = page.evaluate("() => Array.from(Bokeh.documents.map(d => d.get_model_by_name('ccf-mid-src'))"
                                   ".find(Boolean).data.mid).filter(Number.isNaN).length")
            assert breaks == 1
            news = _text(page, "#ccf-news")
            assert "Bitcoin rallies past a round number" in news and "+0.60" in news and "-0.20" in news
            assert _text(page, "#ccf-news-mean") == "+0.20"
            first_window = _text(page, "#ccf-window")
            # a second session joins the same poller (one per server): it starts at the poll count already reached
            polls_before = int(_text(page, "#ccf-poll"))
            other = browser.new_page()
            other.goto(url, wait_until="load", timeout=60_000)
            other.locator("#ccf-mid").wait_for(timeout=60_000)
            deadline = time.monotonic() + 30
            while not _text(other, "#ccf-poll").isdigit():
                assert time.monotonic() < deadline, "the second session shows no poll count"
                time.sleep(0.2)
            assert int(_text(other, "#ccf-poll")) >= polls_before > 1
            assert _text(other, "#ccf-latest") == "2024-01-01 00:01:00"
            other.close()

            # a second run appends while the app polls; it holds the write lock, so the app reads copies
            writer = subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", "flows.features"], cwd=tmp_path,
                env=_env(store, CCF_STOP_AFTER="180", CCF_VENUES__SPEED="10"),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 90
                seen_while_writing = False
                while _text(page, "#ccf-latest") <= "2024-01-01 00:01:00":
                    if writer.poll() not in (None, 0):
                        raise AssertionError("the second run failed: " + writer.communicate()[0].decode()[-3000:])
                    assert time.monotonic() < deadline, "the page never showed a window of the second run"
                    time.sleep(0.3)
                seen_while_writing = writer.poll() is None
                assert _text(page, "#ccf-window") != first_window
                out, _ = writer.communicate(timeout=120)
            finally:
                if writer.poll() is None:
                    writer.kill()
                    writer.wait(10)
            assert writer.returncode == 0, out.decode()[-3000:]
            assert seen_while_writing, "the update arrived only after the writer had finished"
            assert server.poll() is None
            # settle on the end of the second run, then keep a picture of it
            deadline = time.monotonic() + 30
            while _text(page, "#ccf-latest") != "2024-01-01 00:03:00":
                assert time.monotonic() < deadline, f"stuck at {_text(page, '#ccf-latest')}"
                time.sleep(0.3)
            ARTIFACTS.mkdir(exist_ok=True)
            time.sleep(1.0)  # let Bokeh finish drawing the last update
            page.screenshot(path=str(ARTIFACTS / "panel_app.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "panel_app.png").stat().st_size > 10_000


def test_ccf_app_asks_for_a_login_and_finds_the_demo_store(tmp_path: Path) -> None:
    store = tmp_path / ".ccf" / "demo" / "store.duckdb"  # where `ccf demo` writes; CCF_STORE__PATH is not set
    run_main(build_flow(Settings(stop_after=5, venues={"speed": 0}, store={"path": store})))
    port = _free_port()
    env = _env(store, CCF_APP__PORT=str(port), CCF_APP__BASIC_AUTH_USER="alice", CCF_APP__BASIC_AUTH_PASSWORD="s3cret")
    del env["CCF_STORE__PATH"]
    log = tmp_path / "app.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ccf"), "app"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, "ccf app exited"
                try:
                    first = client.get("/")
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "ccf app did not answer within 60 s"
                    time.sleep(0.3)
            assert first.status_code == 302 and "login" in first.headers["location"]
            wrong = client.post("/login", data={"username": "alice", "password": "nope"})
            assert "error" in wrong.headers["location"]
            right = client.post("/login", data={"username": "alice", "password": "s3cret"})
            assert right.status_code == 302 and right.headers["location"] == "/"
            page = client.get("/")
            assert page.status_code == 200 and "CCF live" in page.text
            deadline = time.monotonic() + 30  # the session's first poll picks the store and says which
            while "the app reads" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.3)
            assert f"the app reads {Path('.ccf/demo/store.duckdb')}" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.parametrize(("env", "named"), [
    ({"CCF_APP__HOST": "0.0.0.0"}, "CCF_APP__HOST=0.0.0.0"),
    ({"CCF_APP__HOST": "0.0.0.0", "CCF_APP__BASIC_AUTH_PASSWORD": "change-me"}, "CCF_APP__BASIC_AUTH_PASSWORD"),
])
def test_ccf_app_refuses_to_be_exposed(tmp_path: Path, env: dict[str, str], named: str) -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "ccf"), "app"], cwd=tmp_path, timeout=60,
                         env=_env(tmp_path / "store.duckdb", CCF_APP__PORT=str(_free_port()), **env),
                         capture_output=True, text=True)
    assert out.returncode == 2 and named in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
