"""``ccf backtest FILE -o DIR`` as users run it, on a real capture cut short: the parquet tables, the summary with
what was skipped and why, and the report (scores per model and horizon in bps, with figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from tests.datafiles import data_file

CAPTURE = "hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz"


def test_backtest_writes_tables_summary_and_report_and_counts_what_it_skipped(tmp_path: Path) -> None:
    whole = data_file(CAPTURE).read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])  # a truncated gzip: what it holds is used, the break is counted
    out = tmp_path / "bt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    run = subprocess.run([sys.executable, "-m", "ccf.cli", "backtest", str(cut), "-o", str(out)], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "\x1b[" not in run.stderr  # no terminal: no bar, only the summary line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == {"ParseError": 1}, summary["skipped"]
    line = next(ln for ln in run.stdout.splitlines() if " records in " in ln)
    assert "skipped 1 ParseError" in line and line.endswith(str(out / "report.html"))

    features = pq.read_table(out / "features.parquet")
    assert features.num_rows == summary["feature_rows"] > 100
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    assert {(s["model"], s["horizon_steps"]) for s in scores} == {
        (m, h) for m in ("naive", "ewma", "river_lr", "river_ts", "blend") for h in (1, 5, 10, 20)}
    report = (out / "report.md").read_text()
    for s in scores:  # every score is in the table, MAE in bps with three decimals
        assert f"| ETH-USDT | {s['horizon_steps']} | {s['model']} | {s['n']} | {s['mae'] * 1e4:.3f} |" in report
    page = (out / "report.html").read_text()
    assert "Skipped: 1 ParseError" in page
    for png in ("skill.png", "coverage.png"):
        assert png in page and 5_000 < (out / png).stat().st_size < 200_000
