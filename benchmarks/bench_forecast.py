"""Whole-market cost of forecasting: windows/s on one worker, every baseline and the blend at 4 horizons.

Real rows: Binance spot NEXOUSDT (24 h of depth diffs, trades and bookTicker; a quiet symbol, so many windows and
few messages per window: the forecasting share of the cost is at its largest). ``CCF_BENCH_FORECAST_HOURS``
(default 6) limits the span. In the same run, on the same parsed records, one :class:`ccf.engine.SymbolEngine` per
pass, no Bytewax:

- ``features``: book, windows, features, no model (``EngineConfig(models=())``): the bare feature path;
- ``engine``: the same with every model (naive, ewma, river_lr, river_ts, blend) × h = 1, 5, 10, 20 and the scorer;
- ``forecast``: the forecasting + scoring path alone over the feature rows of ``features`` (what the engine does
  per row: the scorer sees the mid, the forecaster its row, the scorer its predictions);
- ``forecast_<stage>``: the same minus one stage, to see what each costs (``no_blend``, ``no_river_lr``,
  ``no_river_ts``, ``no_scorer``).

Times are CPU seconds of this process (``time.process_time``: other jobs on a shared machine inflate wall time,
far less CPU time); the passes run interleaved, ``repeat`` rounds, the best of each kept. Ratios to ``features`` are
the numbers to compare across machines. ``python -m benchmarks.run forecast`` writes ``benchmarks/results/forecast.json``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ccf.capture.readers import read_records
from ccf.engine import EngineConfig, SymbolEngine
from ccf.features.bookkeeper import SyncedBook
from ccf.forecast.baselines import MODELS, SymbolForecaster
from ccf.forecast.scoring import Scorer
from ccf.schemas import FeatureRow, feature

ROOT = Path(__file__).resolve().parents[1]
HORIZONS = (1, 5, 10, 20)
CHUNK = 500  # records per engine call, as the flow's source batches them


def _files() -> list[Path]:
    d = Path(os.environ.get("CCF_DATA_DIR", ROOT.parent / "shared" / "data")) / "binance_spot_nexousdt_2024-07-23_24"
    return sorted(d.glob("nexousdt_*.dat.gz"))


def _records(hours: float) -> list[Any]:
    out: list[Any] = []
    end = None
    for rec in read_records(_files()):
        ts = getattr(rec, "ts_recv", None)
        if ts is not None:
            end = end or ts + round(hours * 3600e9)
            if ts > end:
                break
        out.append(rec)
    return out


def _engine_pass(records: Sequence[Any], models: tuple[str, ...]) -> tuple[float, list[FeatureRow]]:
    first = next(r for r in records if hasattr(r, "symbol"))
    eng = SymbolEngine(first.venue, first.symbol, SyncedBook(first.venue, first.symbol),
                       EngineConfig(horizons=HORIZONS, models=models))
    rows: list[FeatureRow] = []
    t0 = time.process_time()
    for i in range(0, len(records), CHUNK):
        rows.extend(eng.on_batch(records[i:i + CHUNK]).rows)
    rows.extend(eng.on_eof().rows)
    return time.process_time() - t0, rows


def _forecast_pass(rows: Sequence[FeatureRow], models: Sequence[str], score: bool = True) -> float:
    r0 = rows[0]
    fc = SymbolForecaster(r0.venue, r0.symbol, horizons=HORIZONS, models=models)
    sc = Scorer(r0.venue, r0.symbol)
    t0 = time.process_time()
    for row in rows:
        if score:
            sc.observe_mid(row.window_end, feature(row, "mid") if row.book_valid else math.nan)
        preds = fc.on_row(row)
        if score:
            for p in preds:
                sc.add_prediction(p)
    return time.process_time() - t0


def run(repeat: int = 3) -> dict[str, Any]:
    hours = float(os.environ.get("CCF_BENCH_FORECAST_HOURS", "6"))
    records = _records(hours)
    _, rows = _engine_pass(records, ())
    n = len(rows)
    passes: dict[str, Callable[[], float]] = {
        "features": lambda: _engine_pass(records, ())[0],
        "engine": lambda: _engine_pass(records, MODELS)[0],
        "forecast": lambda: _forecast_pass(rows, MODELS),
    }
    for name, models, score in [
        ("no_blend", [m for m in MODELS if m != "blend"], True),
        ("no_river_lr", [m for m in MODELS if m != "river_lr"], True),
        ("no_river_ts", [m for m in MODELS if m != "river_ts"], True),
        ("no_scorer", list(MODELS), False),
    ]:
        passes[f"forecast_{name}"] = partial(_forecast_pass, rows, models, score)
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, fn in passes.items():
            t = fn()
            best[name] = min(best.get(name, t), t)
    t_feat = best["features"]

    def entry(seconds: float) -> dict[str, float]:
        return {"seconds": round(seconds, 3), "windows_per_s": round(n / seconds),
                "x_features_time": round(seconds / t_feat, 2)}

    return {
        "input": [f.name for f in _files()],
        "hours": hours,
        "records": len(records),
        "windows": n,
        "models": list(MODELS),
        "horizons": list(HORIZONS),
        **{k: entry(v) for k, v in best.items()},
        "goal_engine_windows_per_s": 2000,
    }
