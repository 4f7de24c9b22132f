"""The Panel app in a real browser: served by ``panel serve`` over an embedded store that the real features flow fills.

The first features run (60 s of the synthetic venue) fills the store; the app is served on a free port; headless
Chromium (Debian's, driven by Playwright) loads it and finds live numbers; a second features run then appends while
the app polls (it holds the DuckDB write lock, so the app reads copies), and the page must show a later window. A
screenshot is kept in ``test-artifacts/panel_app.png``.
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
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bytewax.testing import run_main

from ccf.settings import Settings
from flows.features import build_flow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NUMBER = re.compile(r"^-?[\d,]+\.\d+$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(store: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env.update({"CCF_STORE__PATH": str(store), "CCF_APP__POLL_INTERVAL_S": "0.5", **extra})
    return env


@pytest.fixture
def served_app(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    store = tmp_path / "store.duckdb"
    run_main(build_flow(Settings(stop_after=60, venues={"speed": 0}, store={"path": store})))
    port = _free_port()
    log = (tmp_path / "panel.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "panel"), "serve", str(ROOT / "dashboards" / "app.py"), "--port", str(port),
         "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=_env(store), stdout=log, stderr=subprocess.STDOUT,
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
            assert 59_000 < float(_text(page, "#ccf-mid").replace(",", "")) < 61_000  # BTC-USDT of the synthetic venue
            board = _text(page, "#ccf-leaderboard")
            assert "river_lr" in board and "ewma" in board and "naive" in board
            assert "windows buffered" in _text(page, "#ccf-health")
            assert "news table is empty" in _text(page, "#ccf-news-empty")  # made by the flow, news not enabled
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


def test_ccf_app_asks_for_a_login_when_basic_auth_is_set(tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    run_main(build_flow(Settings(stop_after=5, venues={"speed": 0}, store={"path": store})))
    port = _free_port()
    env = _env(store, CCF_APP__PORT=str(port), CCF_APP__BASIC_AUTH_USER="alice", CCF_APP__BASIC_AUTH_PASSWORD="s3cret")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ccf"), "app"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
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
    finally:
        proc.terminate()
        proc.wait(20)
