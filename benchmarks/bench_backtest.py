"""Features-flow replay throughput on the real ETHUSDT capture, against a bare Bytewax pass-through, same run.

Three runs over the same 10 min 50 s of Binance spot ETHUSDT (depth diffs, trades, bookTicker):

- ``backtest``: ``ccf backtest``'s path end to end: read + parse the gzip capture, books, windows, features, the
  four baselines, scoring;
- ``flow_parsed``: the same flow fed the already-parsed records (parsing excluded);
- ``passthrough``: a bare Bytewax flow moving the same parsed records, in the same keyed chunks, to a sink.

Also window-close -> sink latency (p50/p99): from the moment the engine closed windows to the sink receiving them.
``python -m benchmarks.run backtest`` writes ``benchmarks/results/backtest.json``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from ccf.backtest import run_backtest
from ccf.capture.readers import read_records
from ccf.settings import Settings
from ccf.sources import RecordSource
from flows.features import build_flow

ROOT = Path(__file__).resolve().parents[1]


def _files() -> list[Path]:
    d = Path(os.environ.get("CCF_DATA_DIR", ROOT.parent / "shared" / "data")) / "hftbacktest_binance_raw_ws"
    return [d / "spot_ethusdt_20240808.gz", d / "spot_ethusdt_20240809.gz"]


class _Part(StatelessSinkPartition[Any]):
    def __init__(self, sink: _Sink) -> None:
        self.sink = sink

    def write_batch(self, items: list[Any]) -> None:
        now = time.monotonic()
        for _, out in items:
            self.sink.n += 1
            made = getattr(out, "made_at", 0.0)
            if made and getattr(out, "rows", None):
                self.sink.latencies.append(now - made)


class _Sink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.n = 0
        self.latencies: list[float] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Part:
        return _Part(self)


def _best(fn: Any, repeat: int = 3) -> float:
    return min(fn() for _ in range(repeat))


def run() -> dict[str, Any]:
    files = _files()
    settings = Settings(venues={"speed": 0})
    records = list(read_records(files))
    n = len(records)
    span_s = (records[-1].ts_recv - records[0].ts_recv) / 1e9

    with tempfile.TemporaryDirectory() as tmp:
        def backtest() -> float:
            return float(run_backtest(files, Path(tmp), settings)["seconds"])

        t_backtest = _best(backtest)

    latencies: list[float] = []

    def flow_parsed() -> float:
        sink = _Sink()
        t0 = time.perf_counter()
        run_main(build_flow(settings, source=RecordSource({"p": lambda: iter(records)}), sink=sink))
        latencies.extend(sink.latencies)
        return time.perf_counter() - t0

    def passthrough() -> float:
        flow = Dataflow("passthrough")
        s = op.input("in", flow, RecordSource({"p": lambda: iter(records)}))
        op.output("out", s, _Sink())
        t0 = time.perf_counter()
        run_main(flow)
        return time.perf_counter() - t0

    t_flow = _best(flow_parsed)
    t_pass = _best(passthrough)
    lat_ms = sorted(x * 1000 for x in latencies)
    return {
        "input": [f.name for f in files],
        "records": n,
        "event_span_s": round(span_s, 1),
        "backtest": {"seconds": round(t_backtest, 3), "msgs_per_s": round(n / t_backtest),
                     "x_real_time": round(span_s / t_backtest, 1)},
        "flow_parsed": {"seconds": round(t_flow, 3), "msgs_per_s": round(n / t_flow)},
        "passthrough": {"seconds": round(t_pass, 3), "msgs_per_s": round(n / t_pass)},
        "ratio_flow_parsed_over_passthrough_time": round(t_flow / t_pass, 2),
        "ratio_backtest_over_passthrough_time": round(t_backtest / t_pass, 2),
        "window_close_to_sink_ms": {
            "n": len(lat_ms),
            "p50": round(statistics.median(lat_ms), 3) if lat_ms else None,
            "p99": round(lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))], 3) if lat_ms else None,
        },
        "goal_msgs_per_s": 60_000,
    }
