"""The River linear model's skill with other input lists, without touching ``ccf.forecast``: ``ccf backtest``'s
flow on the three liquid real captures with ``ccf.forecast.baselines.LR_FEATURES`` replaced for the run.

Skill is ``1 - SSE / SSE(naive)`` of ``river_lr`` per horizon (1 s windows), the backtest's own final scores.
``python -m benchmarks.lr_inputs`` prints a Markdown table.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import ccf.forecast.baselines as baselines
from ccf.backtest import run_backtest
from ccf.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
RAW = Path(os.environ.get("CCF_DATA_DIR", ROOT.parent / "shared" / "data")) / "hftbacktest_binance_raw_ws"
CAPTURES = {
    "ETH spot": ["spot_ethusdt_20240808.gz", "spot_ethusdt_20240809.gz"],
    "BTC USD-M": ["usdm_btcusdt_20240718.gz", "usdm_btcusdt_20240719.gz"],
    "ETH USD-M": ["usdm_ethusdt_20240718.gz", "usdm_ethusdt_20240719.gz"],
}
SHIPPED = baselines.LR_FEATURES
CURRENT = ("imbalance_1", "imbalance_5", "imbalance_10", "ofi", "mid_logret", "signed_volume", "spread_bps",
           "realized_vol", "micro_dev", "range", "taker_buy_ratio")  # the list before the new signals
_NO_UNSIGNED = tuple(c for c in CURRENT if c not in ("spread_bps", "realized_vol"))
VARIANTS = {
    "previous (before the new signals)": CURRENT,
    "+ tfi_count": (*CURRENT, "tfi_count"),
    "+ tfi_count, ofi_depth_z": (*CURRENT, "tfi_count", "ofi_depth_z"),
    "signed_volume -> tfi_count": tuple("tfi_count" if c == "signed_volume" else c for c in CURRENT),
    "- spread_bps, realized_vol": _NO_UNSIGNED,
    "- spread_bps, realized_vol; signed_volume -> tfi_count; + ofi_depth_z": (
        *("tfi_count" if c == "signed_volume" else c for c in _NO_UNSIGNED), "ofi_depth_z"),
    "- spread_bps, realized_vol; signed_volume -> tfi_count; ofi -> ofi_z": tuple(
        {"signed_volume": "tfi_count", "ofi": "ofi_z"}.get(c, c) for c in _NO_UNSIGNED),
    "shipped (LR_FEATURES)": SHIPPED,
    "- spread_bps, realized_vol; signed_volume -> tfi_count; + ofi_l2..5": (
        *("tfi_count" if c == "signed_volume" else c for c in _NO_UNSIGNED), "ofi_l2", "ofi_l3", "ofi_l4", "ofi_l5"),
}


def main() -> None:
    settings = Settings(_env_prefix="CCF_BENCH_NONE_")
    horizons = settings.forecast.horizons
    print("| inputs | " + " | ".join(f"{n} h={h}" for n in CAPTURES for h in horizons) + " |")
    print("|---|" + "---|" * (len(CAPTURES) * len(horizons)))
    for name, cols in VARIANTS.items():
        baselines.LR_FEATURES = cols  # model_inputs reads the module's list when it is called
        cells = []
        for files in CAPTURES.values():
            with tempfile.TemporaryDirectory() as tmp:
                run_backtest([RAW / f for f in files], Path(tmp), settings, models=["naive", "river_lr"])
                import pyarrow.parquet as pq

                scores = pq.read_table(Path(tmp) / "scores.parquet").to_pylist()
            skill = {s["horizon_steps"]: s["skill"] for s in scores if s["model"] == "river_lr"}
            cells += [f"{skill[h]:+.4f}" for h in horizons]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    baselines.LR_FEATURES = SHIPPED


if __name__ == "__main__":
    main()
