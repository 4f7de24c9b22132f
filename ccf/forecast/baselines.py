"""Online baselines per symbol, learning with delayed labels, and their predictions.

Target: the mid log-return from a window's end to ``h`` windows later. Models (``ForecastSettings.models``):

- ``naive``: zero return (the random-walk forecast every other model must beat);
- ``ewma``: ``h`` times an exponentially weighted mean of past one-window returns;
- ``river_lr``: River linear regression (standard-scaled features, SGD) per horizon; the features of window ``i``
  are learnt with their label only when window ``i + h`` closes, so nothing looks ahead;
- ``river_ts``: River SNARIMAX AR(3) on one-window returns; the ``h``-step forecast is the sum of its path
  (computed from the fitted coefficients in one pass, :func:`ccf.forecast.arpath.ar_path`);
- ``blend``: the other models weighted by their recent losses (:class:`ccf.forecast.blend.HedgeBlend`).

Quantiles: every model's quantiles come from one online calibrator (:class:`ccf.forecast.calibration.
QuantileCalibrator`) per (model, horizon), learning from the same delayed labels, so each 10–90 % band covers
about 80 % of what happens and every model is scored on pinball loss and band coverage too.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from river import compose, linear_model, preprocessing, stats, time_series

from ccf.forecast.arpath import ar_path
from ccf.forecast.blend import HedgeBlend
from ccf.forecast.calibration import QuantileCalibrator
from ccf.schemas import FeatureRow, Prediction, feature
from ccf.settings import BASELINE_MODELS

MODELS = BASELINE_MODELS
LR_FEATURES = (  # chosen by benchmarks/lr_inputs.py (docs/forecasts.md): spread and volatility predict a move's
    "imbalance_1",  # size, not its direction, and cost skill; trade-count imbalance beats signed volume
    "imbalance_5",
    "imbalance_10",
    "ofi",
    "mid_logret",
    "tfi_count",
    "micro_dev",
    "range",
    "taker_buy_ratio",
    "ofi_depth_z",
)
BPS = 1e4  # models learn in basis points: SGD is badly scaled on raw log-returns of ~1e-4
MIN_RESIDUALS = 30  # labels a (model, horizon) needs before it issues quantiles
# calibration (ccf.forecast.calibration): offset step lr · max(floor, boost / sqrt(labels)): 0.15 at 100 labels,
# 0.05 at 900, 0.015 from 10,000 on; spread weight 0.05 / sqrt(h). Chosen on the real captures (docs/forecasts.md)
CAL_LR = 0.05
CAL_BOOST = 30.0
CAL_FLOOR = 0.3
SPREAD_ALPHA = 0.05
SPREAD_POW = 0.5
LR_WARMUP = 50  # labels seen at a horizon before the learnt models speak there
CLIP_SD = 3.0  # a learnt forecast beyond this many standard deviations of the realised target is clipped to it


def model_inputs(features: Mapping[str, float | None]) -> dict[str, float]:
    """The River linear model's inputs from a feature row (NaN → 0, microprice deviation in bps).

    >>> x = model_inputs({"mid": 100.0, "microprice": 100.01, "ofi": float("nan")})
    >>> round(x["micro_dev"], 9), x["ofi"]
    (1.0, 0.0)
    """
    # book rows and kline rows have different sets; None (NaN from the wire) counts as 0
    x = {k: v or 0.0 for k in LR_FEATURES if k in features for v in (features[k],)}
    mid, micro = features.get("mid") or math.nan, features.get("microprice")
    if micro is not None and micro == micro:
        x["micro_dev"] = (micro - mid) / mid * BPS if mid > 0 else 0.0
    x["mid_logret"] = x.get("mid_logret", 0.0) * BPS
    return {k: (v if v == v and math.isfinite(v) else 0.0) for k, v in x.items()}


class SymbolForecaster:
    """Every baseline for one ``venue:symbol``. Feed it each closed window's row; get its predictions."""

    def __init__(
        self,
        venue: str,
        symbol: str,
        horizons: Sequence[int] = (1, 5, 10, 20),
        models: Sequence[str] = MODELS,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        window_s: float = 1.0,
        ewma_alpha: float = 0.1,
    ) -> None:
        unknown = set(models) - set(MODELS)
        if unknown:
            raise ValueError(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
        self.venue, self.symbol = venue, symbol
        self.horizons = tuple(sorted(horizons))
        self.models = tuple(models)
        self.quantiles = tuple(quantiles)
        self.window_s = window_s
        self.max_h = self.horizons[-1]
        # (window_end, mid, x, {(model, h): prediction}) of the last max_h windows
        self.history: deque[tuple[int, float, dict[str, float], dict[tuple[str, int], Prediction]]] = deque(
            maxlen=self.max_h
        )
        self.ewma = stats.EWMean(fading_factor=ewma_alpha)
        self.lr: dict[int, Any] = {
            h: preprocessing.TargetStandardScaler(
                compose.Pipeline(  # type: ignore[arg-type]  # a Pipeline is a Regressor at run time
                    preprocessing.StandardScaler(),
                    linear_model.BayesianLinearRegression(alpha=1.0, beta=1.0, smoothing=0.999),
                )
            )
            for h in self.horizons
        }
        self.lr_n: dict[int, int] = dict.fromkeys(self.horizons, 0)
        self.y_var: dict[int, Any] = {h: stats.Var() for h in self.horizons}
        self.ts = time_series.SNARIMAX(p=3, d=0, q=0)
        self.ts_seen = 0
        # one calibrator per horizon: residuals of overlapping h-window targets are correlated, so the spread
        # averages over more of them the longer the horizon
        self.calibrators = {
            h: QuantileCalibrator(self.quantiles, lr=CAL_LR, spread_alpha=SPREAD_ALPHA / h**SPREAD_POW,
                                  min_labels=MIN_RESIDUALS, boost=CAL_BOOST, floor=CAL_FLOOR)
            for h in self.horizons
        }
        self.blend = (
            HedgeBlend([m for m in self.models if m != "blend"], self.horizons) if "blend" in self.models else None
        )
        self._width_ns = round(window_s * 1e9)

    def on_row(self, row: FeatureRow) -> list[Prediction]:
        mid = feature(row, "mid")
        valid = row.book_valid and mid > 0
        x = model_inputs(row.features) if valid else {}
        self._learn(mid if valid else math.nan, feature(row, "mid_logret"), x)
        preds: dict[tuple[str, int], Prediction] = {}
        if valid:
            ts_path = self._ts_path()
            for h in self.horizons:
                values = {m: self._predict(m, h, x, ts_path) for m in self.models if m != "blend"}
                if self.blend is not None:
                    values["blend"] = self.blend.forecast(h, values)
                for model in self.models:
                    preds[(model, h)] = self._prediction(model, h, row.window_end, values[model])
        self.history.append((row.window_end, mid if valid else math.nan, x, preds))
        return [preds[(m, h)] for m in self.models for h in self.horizons] if preds else []

    # -- learning with delayed labels ---------------------------------------------------------------------------
    def _learn(self, mid: float, r1: float, x_now: dict[str, float]) -> None:
        if r1 == r1 and mid == mid:
            self.ewma.update(r1)
            self.ts.learn_one(r1 * BPS)  # type: ignore[no-untyped-call]  # River's time-series API is untyped
            self.ts_seen += 1
        if not mid > 0:
            return
        n = len(self.history)
        for h in self.horizons:
            if n < h:
                break
            _, mid0, x0, preds0 = self.history[n - h]
            if not mid0 > 0:
                continue
            y = math.log(mid / mid0)
            self.lr[h].learn_one(x0, y * BPS)
            self.lr_n[h] += 1
            self.y_var[h].update(y)
            if not preds0:
                continue
            if self.blend is not None:
                self.blend.update(h, y, {m: preds0[(m, h)].value for m in self.models if m != "blend"})
            for model in self.models:
                p = preds0[(model, h)]
                self.calibrators[h].update(model, y, p.value, p.quantiles)

    # -- predicting ---------------------------------------------------------------------------------------------
    def _ts_path(self) -> list[float]:
        if "river_ts" not in self.models or self.ts_seen < 10:
            return [0.0] * self.max_h
        path = ar_path(self.ts, self.max_h)
        return [v / BPS if math.isfinite(v) else 0.0 for v in path]

    def _predict(self, model: str, h: int, x: dict[str, float], ts_path: list[float]) -> float:
        if model == "naive":
            return 0.0
        if model == "ewma":
            mean = self.ewma.get()
            return h * mean if mean == mean else 0.0
        if self.lr_n[h] < LR_WARMUP:  # the learnt models say what naive says until they have seen enough labels
            return 0.0
        if model == "river_lr":
            v = self.lr[h].predict_one(x) / BPS
        else:
            v = math.fsum(ts_path[:h])
        bound = CLIP_SD * math.sqrt(max(self.y_var[h].get(), 0.0))
        return max(-bound, min(bound, v)) if math.isfinite(v) else 0.0

    def _prediction(self, model: str, h: int, issued_at: int, value: float) -> Prediction:
        quantiles = self.calibrators[h].quantiles(model, value)
        width_ns = self._width_ns
        return Prediction(
            model=model,
            model_version="online",
            venue=self.venue,
            symbol=self.symbol,
            horizon_steps=h,
            horizon_s=h * self.window_s,
            issued_at=issued_at,
            target_time=issued_at + h * width_ns,
            value=value,
            quantiles=quantiles,
        )
