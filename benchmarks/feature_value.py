"""How much each 1-second feature says about the next 1 s and 5 s mid return, on the real captures.

For every capture: the features flow's engine (1 s windows, no models) over the files, then per feature ``x_t``
(known at window end ``t``) and target ``y_t = log(mid_{t+h} / mid_t)`` for ``h`` = 1 and 5 windows:

- ``corr``: Pearson correlation over all windows with a valid book and a finite target (NaN inputs as 0, as the
  River model takes them);
- ``r2_oos``: out-of-sample R² of a univariate least-squares fit (with intercept) on the first 60 % of the windows,
  scored on the last 40 % against the zero forecast (the naive model's "no change"): ``1 - SSE / sum(y^2)``. Inputs are
  clipped to their training 1-99 % quantiles first (queue ratios have a long tail).
- ``gain``: what each column adds to a small base fit (``imbalance_1``, ``micro_dev_bps``, ``ofi``: the strongest
  current inputs), in out-of-sample R² points; and two wide fits the same way: the River model's current inputs
  (``LR_FEATURES``), and those plus every new column (on 8-minute captures these over-fit: few hundred windows).

The last column pools the three liquid 8-minute captures (ETH spot, BTC and ETH USD-M): each capture's inputs and
target standardised by its own training part, the training parts fitted together, the test parts scored together.

``python -m benchmarks.feature_value`` prints a Markdown table and writes ``benchmarks/results/feature_value.json``.
Windows overlap in the 5 s targets, so correlations there are noisier than ``1/sqrt(n)`` suggests.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ccf.capture.readers import read_records
from ccf.engine import EngineConfig, SymbolEngine
from ccf.features.bookkeeper import SyncedBook
from ccf.features.signals import SIGNAL_FEATURES

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CCF_DATA_DIR", ROOT.parent / "shared" / "data"))
CAPTURES = {
    "spot ETHUSDT 08-08/09": ("hftbacktest_binance_raw_ws", ["spot_ethusdt_20240808.gz", "spot_ethusdt_20240809.gz"]),
    "USD-M BTCUSDT 07-18/19": ("hftbacktest_binance_raw_ws", ["usdm_btcusdt_20240718.gz", "usdm_btcusdt_20240719.gz"]),
    "USD-M ETHUSDT 07-18/19": ("hftbacktest_binance_raw_ws", ["usdm_ethusdt_20240718.gz", "usdm_ethusdt_20240719.gz"]),
    "spot NEXOUSDT 24 h": ("binance_spot_nexousdt_2024-07-23_24", ["nexousdt_20240723.dat.gz", "nexousdt_20240724.dat.gz"]),
}
# the River model's inputs today (ccf.forecast.baselines.LR_FEATURES, micro_dev there is micro_dev_bps here)
CURRENT = ["imbalance_1", "imbalance_5", "imbalance_10", "ofi", "mid_logret", "signed_volume", "spread_bps",
           "realized_vol", "micro_dev_bps"]
NEW = [c for c in SIGNAL_FEATURES if c != "micro_dev_bps"] + ["ofi_over_vol"]
HORIZONS = (1, 5)
TRAIN = 0.6
BASE = ["imbalance_1", "micro_dev_bps", "ofi"]


def rows(files: list[Path]) -> pd.DataFrame:
    records = list(read_records(files, with_extra=True))
    symbol = next(r for r in (x[0] if type(x) is tuple else x for x in records) if hasattr(r, "symbol"))
    eng = SymbolEngine(symbol.venue, symbol.symbol, SyncedBook(symbol.venue, symbol.symbol), EngineConfig(models=()))
    out = []
    for i in range(0, len(records), 2000):
        out += eng.on_batch(records[i : i + 2000]).rows
    out += eng.on_eof().rows
    df = pd.DataFrame([{"window_end": r.window_end, "book_valid": r.book_valid, **r.features} for r in out])
    df["ofi_over_vol"] = df.ofi / df.realized_vol.where(df.realized_vol > 0)  # the literal "OFI / realised vol"
    return df


def _fit_r2(x: np.ndarray, y: np.ndarray) -> float:
    """Out-of-sample R² (vs the zero forecast) of least squares on the first TRAIN share, clipped inputs."""
    k = int(len(y) * TRAIN)
    lo, hi = np.quantile(x[:k], 0.01, axis=0), np.quantile(x[:k], 0.99, axis=0)
    x = np.clip(x, lo, hi)
    a = np.column_stack([np.ones(len(y)), x])
    beta, *_ = np.linalg.lstsq(a[:k], y[:k], rcond=None)
    err = y[k:] - a[k:] @ beta
    return float(1.0 - (err @ err) / (y[k:] @ y[k:]))


def _target(df: pd.DataFrame, h: int) -> tuple[pd.Series, np.ndarray]:
    if f"y{h}" in df:  # a pooled frame: standardised targets made already
        ok = df[f"y{h}"].notna() & df.book_valid
        return ok, df.loc[ok, f"y{h}"].to_numpy()
    mid = df["mid"].where(df.book_valid)
    y = np.log(mid.shift(-h) / mid)
    ok = y.notna() & df.book_valid
    return ok, y[ok].to_numpy()


def pooled(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One frame of several captures, each standardised by its training part; training parts first, so the pooled
    frame's first 60 % are exactly the training parts."""
    train, test = [], []
    for df in frames:
        part = pd.DataFrame(index=df.index)
        k = int(len(df) * TRAIN)
        for c in [*CURRENT, *NEW]:
            x = df[c].fillna(0.0).replace([np.inf, -np.inf], 0.0)
            sd = x.iloc[:k].std()
            part[c] = (x - x.iloc[:k].mean()) / (sd if sd > 0 else 1.0)
        part["book_valid"] = df.book_valid
        for h in HORIZONS:
            mid = df["mid"].where(df.book_valid)
            y = np.log(mid.shift(-h) / mid)
            part[f"y{h}"] = y / y.iloc[:k].std()
        train.append(part.iloc[:k])
        test.append(part.iloc[k:])
    return pd.concat(train + test, ignore_index=True)


def measure(df: pd.DataFrame) -> dict[str, object]:
    res: dict[str, object] = {"windows": len(df)}
    for h in HORIZONS:
        ok, yy = _target(df, h)

        def inputs(cols: list[str], ok: pd.Series = ok) -> np.ndarray:
            return df.loc[ok, cols].fillna(0.0).replace([np.inf, -np.inf], 0.0).to_numpy()

        base = _fit_r2(inputs(BASE), yy)
        feats = {}
        for c in [*CURRENT, *NEW]:
            x = inputs([c])[:, 0]
            corr = float(np.corrcoef(x, yy)[0, 1]) if x.std() > 0 and yy.std() > 0 else math.nan
            gain = _fit_r2(inputs([*BASE, c]), yy) - base if c not in BASE else 0.0
            feats[c] = {"corr": corr, "r2_oos": _fit_r2(x[:, None], yy), "gain": gain}
        xs = {name: inputs(cols) for name, cols in (("base", BASE), ("current", CURRENT), ("current+new", CURRENT + NEW))}
        res[f"h{h}"] = {"n": int(ok.sum()), "moves": float((yy != 0).mean()), "features": feats,
                        "joint_r2_oos": {name: _fit_r2(x, yy) for name, x in xs.items()}}
    return res


def main() -> None:
    results = {}
    frames = {}
    for name, (folder, files) in CAPTURES.items():
        frames[name] = rows([DATA / folder / f for f in files])
        results[name] = measure(frames[name])
        print(f"{name}: done", file=sys.stderr)
    results["3 liquid pooled"] = measure(pooled([frames[n] for n in list(CAPTURES)[:3]]))
    out = ROOT / "benchmarks" / "results" / "feature_value.json"
    out.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")
    names = list(results)
    print("| feature | " + " | ".join(f"{n} h={h}" for n in names for h in HORIZONS) + " |")
    print("|---|" + "---|" * (len(names) * len(HORIZONS)))
    for c in [*CURRENT, *NEW]:
        cells = []
        for n in names:
            for h in HORIZONS:
                f = results[n][f"h{h}"]["features"][c]  # type: ignore[index]
                cells.append(f"{f['corr']:+.3f} / {f['r2_oos'] * 100:+.1f} / {f['gain'] * 100:+.1f}")
        print(f"| `{c}` | " + " | ".join(cells) + " |")
    for j in ("base", "current", "current+new"):
        cells = [f"{results[n][f'h{h}']['joint_r2_oos'][j] * 100:+.2f}" for n in names for h in HORIZONS]  # type: ignore[index]
        print(f"| joint R² %: {j} | " + " | ".join(cells) + " |")
    print("| n (moves) | " + " | ".join(f"{results[n][f'h{h}']['n']} ({results[n][f'h{h}']['moves']:.0%})"  # type: ignore[index]
                                        for n in names for h in HORIZONS) + " |")


if __name__ == "__main__":
    main()
