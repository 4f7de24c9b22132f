"""The features flow end to end: the main job's command on embedded defaults, and 1 vs 2 workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from bytewax.testing import TestingSink, cluster_main, run_main

from ccf.engine import EngineOut
from ccf.settings import Settings
from flows.features import build_flow

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_main_job_runs_offline_on_embedded_defaults_and_stops(tmp_path: Path) -> None:
    store = tmp_path / "store.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env.update({"CCF_STOP_AFTER": "30", "CCF_VENUES__SPEED": "0", "CCF_STORE__PATH": str(store)})
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.features"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("ccf features:")]
    assert len(summary) == 1 and "60 feature rows" in summary[0] and str(store) in summary[0]
    con = duckdb.connect(str(store), read_only=True)
    n, distinct, symbols = con.execute(
        "select count(*), count(distinct (symbol, window_start)), count(distinct symbol) from features"
    ).fetchone()
    assert (n, distinct, symbols) == (60, 60, 2)
    # 30 one-second windows per symbol, contiguous
    gaps = con.execute(
        "select count(*) from (select window_start - lag(window_start) over (partition by symbol order by window_start)"
        " as d from features) where d is not null and d <> 1000000000"
    ).fetchone()[0]
    assert gaps == 0
    preds = con.execute("select count(*), count(distinct model), count(distinct horizon_steps) from predictions").fetchone()
    assert preds == (60 * 16, 4, 4)
    assert con.execute("select count(*) from scores where n > 0").fetchone()[0] > 0


def _run(workers: int, tmp: Path) -> list[EngineOut]:
    settings = Settings(stop_after=40, venues={"speed": 0, "symbols": ["BTC-USDT", "ETH-USDT", "SOL-USDT"]},
                        store={"path": tmp / "unused.duckdb"})
    out: list[tuple[str, EngineOut]] = []
    flow = build_flow(settings, sink=TestingSink(out))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return [o for _, o in out]


def _rows(outs: list[EngineOut]) -> tuple[list[object], list[object], list[object]]:
    rows = sorted((r.symbol, r.window_start, r.features["mid"], r.features["ofi"], r.features["volume"]) for o in outs
                  for r in o.rows)
    preds = sorted((p.symbol, p.issued_at, p.model, p.horizon_steps, p.value) for o in outs for p in o.predictions)
    scores = sorted((s.symbol, s.window_end, s.model, s.horizon_steps, s.n, s.mae) for o in outs for s in o.scores)
    return rows, preds, scores


def test_two_workers_write_the_same_rows_as_one(tmp_path: Path) -> None:
    one = _rows(_run(1, tmp_path))
    two = _rows(_run(2, tmp_path))
    assert len(one[0]) == 3 * 40
    assert one == two
