"""README's picture from a real run: ``ccf demo`` started here, the page shot in headless Chromium once the TFT serves.

    python -m dashboards.screenshot --out docs/img/demo.png --speed 10 --tft-after 300

It waits until the demo says its TFT forecasts (trained, passed or failed its gate), lets the page show a few
scored windows more, shoots it, and stops the demo. Needs Debian's Chromium
(``make browser``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def _tft_state(log: Path) -> str | None:
    """``forecasting`` once the demo's TFT serves, ``skipped`` when its step gave up, None before (from its log)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    if "TFT step skipped" in text:
        return "skipped"
    return "forecasting" if " forecasting (" in text else None


def shoot(url: str, out: Path, width: int = 1400, height: int = 1000) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=chromium, headless=True,
                                                        args=CHROMIUM_ARGS, viewport={"width": width, "height": height})
        page = browser.new_page()
        page.goto(url, wait_until="networkidle", timeout=60_000)
        page.wait_for_timeout(5_000)  # a few polls of the store
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Retake README's demo picture from a real ccf demo run.")
    parser.add_argument("--out", type=Path, default=Path("docs/img/demo.png"))
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--tft-after", type=int, default=300)
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the TFT's forecasts")
    args = parser.parse_args(argv)
    run_dir = Path(tempfile.mkdtemp(prefix="ccf-shot-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")} | {"CCF_RUN_DIR": str(run_dir)}
    cmd = [str(Path(sys.executable).parent / "ccf"), "demo", "--speed", str(args.speed), "--tft-after",
           str(args.tft_after), "--port", str(args.port)]
    log = run_dir / "demo.log"
    with log.open("wb") as sink:
        demo = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + args.timeout
        while (state := _tft_state(log)) != "forecasting":
            if state == "skipped" or demo.poll() is not None or time.monotonic() > deadline:
                print(f"ccf: error: the demo served no TFT forecast ({state or 'not in time'}); see {log}",
                      file=sys.stderr)
                return 2
            time.sleep(2)
        time.sleep(30)  # the TFT's bands and scores on screen
        shoot(f"http://127.0.0.1:{args.port}/", args.out)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
