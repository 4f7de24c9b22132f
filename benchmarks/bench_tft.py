"""TFT training time per epoch and predictor latency per step, on the real Binance BTCUSDT 1-minute klines.

* ``train``: one full epoch (every training sample once, plus validation) of the default-sized TFT (hidden 16,
  2 heads, encoder 60 windows, horizons 1/5/10/20, batch 128) on 7 days of klines; seconds and samples/s.
* ``predict``: :class:`models.predict.Predictor` stepping through rows one window at a time with every symbol in
  one batch (the klines copied under ``n`` symbol names), time per step from the rows to the predictions:
  p50/p99/max over 300 steps (wall clock, and the process's CPU time, which leaves out waiting for a core on a
  busy machine), for 1 and 8 symbols and 1 and 2 torch threads. The goal is p99 < 20 ms on CPU.

Run: ``python -m benchmarks.bench_tft [--device cuda] [--threads N]`` (or ``make bench``; ``run()`` uses the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

DAYS = [f"2025-11-{d:02d}" for d in range(1, 8)]
STEPS = 300


def _data_dir() -> Path:
    from ccf.settings import load_settings

    path = load_settings().data_dir  # CCF_DATA_DIR, else ../shared/data (relative paths: from the repo root)
    return (path if path.is_absolute() else ROOT / path) / "binance_spot_btcusdt_1m_klines"


def _rows(n_symbols: int) -> list[Any]:
    import msgspec

    from ccf.settings import load_settings
    from models.sources import rows_from_files

    base = rows_from_files([_data_dir() / f"BTCUSDT-1m-{d}.csv.gz" for d in DAYS], load_settings())
    if n_symbols == 1:
        return base
    return [msgspec.structs.replace(r, symbol=f"S{i}-USDT") for r in base for i in range(n_symbols)]


def _train(rows: list[Any], device: str, tmp: Path, limit: int | None = None) -> tuple[Any, dict[str, Any]]:
    from ccf.settings import load_settings
    from models.dataset import rows_to_frame
    from models.train import TrainConfig, fit

    cfg = TrainConfig(max_epochs=1, progress=False, accelerator="gpu" if device.startswith("cuda") else "cpu",
                      checkpoint_dir=tmp, limit_train_batches=limit, limit_val_batches=limit)
    t0 = time.perf_counter()
    fitted = fit(rows_to_frame(rows), load_settings(), cfg)
    total = time.perf_counter() - t0
    samples = int((fitted.prepared["time_idx"] < fitted.val_start_idx).sum()) - cfg.encoder_length
    epoch = fitted.epoch_seconds[0]
    return fitted, {
        "rows": len(rows), "train_samples_approx": samples, "epoch_s": round(epoch, 2),
        "samples_per_s": round(samples / epoch, 1), "fit_total_s": round(total, 2),
        "hidden_size": cfg.net.hidden_size, "encoder_length": cfg.encoder_length, "batch_size": cfg.batch_size,
    }


def _latency(fitted: Any, rows_by_symbol: int, device: str) -> dict[str, Any]:
    import msgspec

    from models.predict import Predictor
    from models.registry import LoadedModel

    spec = fitted.spec
    base = _rows(1)
    syms = [f"S{i}-USDT" for i in range(rows_by_symbol)] if rows_by_symbol > 1 else [base[0].symbol]
    loaded = LoadedModel("bench", "1", "", fitted.model, spec)
    predictor = Predictor(loaded, device=device)
    warm = spec.history + 20
    steps = [[msgspec.structs.replace(r, symbol=s) if s != r.symbol else r for s in syms]
             for r in base[: warm + STEPS]]
    for step in steps[:warm]:
        predictor.on_rows(step)
    times, cpu = [], []
    for step in steps[warm:]:
        t0, c0 = time.perf_counter(), time.process_time()
        out = predictor.on_rows(step)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert len(out) == len(syms) * len(spec.horizons)
    ms, cpu_ms = np.array(times) * 1e3, np.array(cpu) * 1e3
    return {"symbols": len(syms), "steps": len(times), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
            # CPU time of the process per step: the work itself, without waiting for a core on a busy machine
            "cpu_p50_ms": round(float(np.percentile(cpu_ms, 50)), 2),
            "cpu_p99_ms": round(float(np.percentile(cpu_ms, 99)), 2)}


def run(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    import torch

    from models.network import quiet_library_warnings

    before = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    results: dict[str, Any] = {"device": device, "torch": torch.__version__, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp, quiet_library_warnings():
        fitted, results["train"] = _train(_rows(1), device, Path(tmp))
        results["train"]["torch_threads"] = torch.get_num_threads()
        n = 8
        fitted_n, _ = _train(_rows(n), device, Path(tmp), limit=2)  # a model that knows n symbols, for latency
        results["predict"] = []
        for t in ([threads] if threads else [1, 2]):
            torch.set_num_threads(t)
            for k, model in ((1, fitted), (n, fitted_n)):
                results["predict"].append({"torch_threads": t, **_latency(model, k, device)})
    torch.set_num_threads(before)
    results["goal_p99_ms"] = 20.0
    results["meets_goal"] = all(r["p99_ms"] < 20.0 for r in results["predict"] if r["torch_threads"] == 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1, and 1+2 for latency)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    res = run(args.device, args.threads)
    text = json.dumps(res, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
