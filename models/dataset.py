"""Feature rows → the TFT's training frame: data checks, targets, known time features, scaled inputs.

Target (what every CCF model forecasts): the mid log-return from a window's end to ``h`` windows later. A TFT
predicts a column's value at each of the next ``max_prediction_length`` steps, so for each horizon ``h`` the frame
carries the *backward* return ``ret_h[t] = log(mid[t] / mid[t - h])``: at decoder step ``h`` (time ``t + h``) it is
exactly the forward return ``log(mid[t + h] / mid[t])`` from the anchor ``t``, and in the encoder it is past data
only (no look-ahead). One target per horizon, ``max_prediction_length = max(horizons)``, and the loss of target
``ret_h`` counts only decoder step ``h`` (:class:`models.network.HorizonQuantileLoss`).

Target scale: the network learns each target divided by its symbol's training deviation (``FeatureSpec.target_sd``,
one per group and horizon), optionally also by the volatility ratio known at issue time (``vol_window``), and its
forecasts are multiplied back (:mod:`models.targets`). pytorch-forecasting's own ``standard`` normalisers cannot do
this: they add float16's eps (``9.8e-4``) to the deviation, which swamps returns of ``1e-6``.

Inputs: known reals are the time of day and day of week (sin/cos) of each window's end; unknown reals are the
targets and the market features, made scale-free (price levels dropped or turned into bps deviations from the mid,
sizes, counts and order-flow imbalances (signed) ``log1p``-ed) and standardised per symbol with means and
deviations fitted on that symbol's training rows only (``group_mean``, ``group_std``; the pooled ones for a symbol
the spec does not know), then clipped to ±10 deviations.

A gap (a missing window, an invalid book, a non-positive mid) splits a symbol's rows into segments: a sample never
spans a gap. Each segment is one TFT series (``series = venue:SYMBOL#n``); ``group = venue:SYMBOL`` is the static
categorical.

>>> tf = time_features(np.array([0, 6 * 3600 * 10**9]))  # 1970-01-01 00:00 and 06:00 (a Thursday)
>>> [round(float(v), 6) + 0.0 for v in tf[1][:2]], round(float(tf[0][2]), 6)
([1.0, 0.0], 0.433884)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ccf.errors import DataError
from ccf.schemas import FeatureRow

META_COLUMNS = ("venue", "symbol", "window_start", "window_end", "feature_set", "book_valid")
TIME_FEATURES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")
DROPPED = frozenset({"best_bid", "best_ask", "mid", "close", "microprice", "vwap", "spread", "mid_logret", "epoch"})
"""Price levels (not stationary) and ``mid_logret`` (it is ``ret_1``, already an input)."""
SIGNED_LOG = frozenset({"ofi", "signed_volume", "ofi_l2", "ofi_l3", "ofi_l4", "ofi_l5", "ofi_depth"})
LOG1P_MARKERS = ("volume", "size", "depth", "count", "notional", "events", "carried", "late")
CLIP_SD = 10.0
NS_PER_DAY = 86_400 * 10**9


class DataCheckError(DataError):
    """A feature extract that breaks a data check (duplicate ``(symbol, ts)``, time going backwards, ...)."""


def target_name(h: int) -> str:
    return f"ret_{h}"


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to turn feature rows into model inputs, fitted on a training frame; JSON-able."""

    feature_set: str
    inputs: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    horizons: tuple[int, ...]
    quantiles: tuple[float, ...]
    width_ns: int
    encoder_length: int
    groups: tuple[str, ...]
    target_sd: tuple[tuple[float, ...], ...] = ()
    """Per group (in ``groups`` order), per horizon: the deviation of ``ret_h`` in the training rows. Empty (a
    spec from before it existed): 1, the targets unscaled."""
    group_mean: tuple[tuple[float, ...], ...] = ()
    """Per group, per input: the mean of its training rows (empty: ``mean`` for every group)."""
    group_std: tuple[tuple[float, ...], ...] = ()
    vol_window: int = 0
    """Windows of one-step returns in the volatility ratio the targets are also divided by; 0: none
    (:mod:`models.targets`)."""
    vol_ref: tuple[float, ...] = ()
    """Per group: the training mean of that rolling RMS (the ratio's denominator)."""
    vol_floor: float = 0.25
    vol_cap: float = 4.0

    def input_stats(self, group: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Means and deviations ``group``'s inputs are standardised with."""
        if group is not None and self.group_mean and group in self.groups:
            k = self.groups.index(group)
            return np.asarray(self.group_mean[k]), np.asarray(self.group_std[k])
        return np.asarray(self.mean), np.asarray(self.std)

    def vol_reference(self, group: str) -> float:
        """``group``'s ``vol_ref`` (the geometric mean over groups for a group the spec does not know)."""
        if group in self.groups:
            return self.vol_ref[self.groups.index(group)]
        return float(np.exp(np.log(np.asarray(self.vol_ref)).mean()))

    def target_scales(self, group: str) -> tuple[float, ...]:
        """The deviations ``group``'s targets are divided by (their geometric mean over groups for a group the
        spec does not know; 1 for a spec without ``target_sd``)."""
        if not self.target_sd:
            return (1.0,) * len(self.horizons)
        if group in self.groups:
            return self.target_sd[self.groups.index(group)]
        return tuple(float(v) for v in np.exp(np.log(np.asarray(self.target_sd)).mean(axis=0)))

    @property
    def max_h(self) -> int:
        return max(self.horizons)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(target_name(h) for h in self.horizons)

    @property
    def history(self) -> int:
        """Rows a symbol needs before its first forecast: the encoder, ``max_h`` to compute its targets and
        ``vol_window`` for the volatility ratio of the earliest of them."""
        return self.encoder_length + self.max_h + self.vol_window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            feature_set=str(d["feature_set"]),
            inputs=tuple(str(v) for v in d["inputs"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            horizons=tuple(int(v) for v in d["horizons"]),
            quantiles=tuple(float(v) for v in d["quantiles"]),
            width_ns=int(d["width_ns"]),
            encoder_length=int(d["encoder_length"]),
            groups=tuple(str(v) for v in d["groups"]),
            target_sd=_nested(d.get("target_sd", ())),
            group_mean=_nested(d.get("group_mean", ())),
            group_std=_nested(d.get("group_std", ())),
            vol_window=int(d.get("vol_window", 0)),
            vol_ref=tuple(float(v) for v in d.get("vol_ref", ())),
            vol_floor=float(d.get("vol_floor", 0.25)),
            vol_cap=float(d.get("vol_cap", 4.0)),
        )


def _nested(v: Any) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(x) for x in row) for row in v)


# -- rows and checks ------------------------------------------------------------------------------------------------
def rows_to_frame(rows: Iterable[FeatureRow]) -> pd.DataFrame:
    """One column per meta field and per feature (NaN where a row lacks it), rows in the order given."""
    cols: dict[str, list[Any]] = {c: [] for c in META_COLUMNS}
    feats: dict[str, list[float]] = {}
    for n, r in enumerate(rows, 1):
        for c in META_COLUMNS:
            cols[c].append(getattr(r, c))
        for k, v in r.features.items():
            lst = feats.get(k)
            if lst is None:
                lst = feats[k] = [math.nan] * (n - 1)
            lst.append(math.nan if v is None else float(v))
        for lst in feats.values():
            if len(lst) < n:
                lst.append(math.nan)
    frame = pd.DataFrame({**cols, **{k: np.asarray(v, dtype=np.float64) for k, v in feats.items()}})
    for c in ("window_start", "window_end"):
        frame[c] = frame[c].astype(np.int64)
    frame["book_valid"] = frame["book_valid"].astype(bool)
    return frame


def check_frame(frame: pd.DataFrame) -> None:
    """Data checks on a feature extract: raise :class:`DataCheckError` naming the first problem.

    No duplicate ``(venue, symbol, window_start)``; per symbol, ``window_start`` strictly increasing as delivered;
    windows of one width; one feature set.
    """
    if frame.empty:
        raise DataCheckError("empty feature extract")
    key = ["venue", "symbol", "window_start"]
    dup = frame.duplicated(key, keep=False)
    if dup.any():
        first = frame.loc[dup, key].iloc[0]
        raise DataCheckError(f"duplicate window {first['window_start']}", venue=first["venue"], symbol=first["symbol"])
    for (venue, symbol), g in frame.groupby(["venue", "symbol"], sort=False):
        ws = g["window_start"].to_numpy()
        if len(ws) > 1 and not (np.diff(ws) > 0).all():
            at = int(ws[1:][np.diff(ws) <= 0][0])
            raise DataCheckError(f"time goes backwards at window_start {at}", venue=str(venue), symbol=str(symbol))
    widths = np.unique(frame["window_end"].to_numpy() - frame["window_start"].to_numpy())
    if len(widths) != 1 or widths[0] <= 0:
        raise DataCheckError(f"windows of several widths {widths[:5].tolist()} (ns)")
    sets = frame["feature_set"].unique()
    if len(sets) != 1:
        raise DataCheckError(f"several feature sets {sorted(sets)}")


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of a feature frame's contents (column names, order and values): the dataset's identity in MLflow."""
    h = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


# -- features -------------------------------------------------------------------------------------------------------
def derive(cols: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Scale-free model inputs from raw feature columns (numpy arrays of equal length), names sorted.

    >>> d = derive({"mid": np.array([100.0]), "microprice": np.array([100.01]), "volume": np.array([np.e - 1])})
    >>> sorted(d), round(float(d["micro_dev"][0]), 6), round(float(d["volume"][0]), 6)
    (['micro_dev', 'volume'], 1.0, 1.0)
    """
    out: dict[str, np.ndarray] = {}
    mid = cols.get("mid")
    for name, v in cols.items():
        if name in DROPPED or name in META_COLUMNS:
            continue
        v = np.asarray(v, dtype=np.float64)
        if name in SIGNED_LOG:
            out[name] = np.sign(v) * np.log1p(np.abs(v))
        elif any(m in name for m in LOG1P_MARKERS):
            out[name] = np.log1p(np.maximum(v, 0.0))
        else:
            out[name] = v
    if mid is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            for src, dst in (("microprice", "micro_dev"), ("vwap", "vwap_dev")):
                if src in cols:
                    out[dst] = (np.asarray(cols[src]) - mid) / mid * 1e4
    return {k: out[k] for k in sorted(out)}


def time_features(window_end: np.ndarray) -> np.ndarray:
    """``(n, 4)``: sin/cos of the time of day and of the day of week (Monday = 0) of each window end (ns)."""
    t = np.asarray(window_end, dtype=np.int64)
    day_frac = (t % NS_PER_DAY) / NS_PER_DAY
    dow = ((t // NS_PER_DAY) + 3) % 7  # 1970-01-01 was a Thursday
    a, b = 2 * np.pi * day_frac, 2 * np.pi * dow / 7
    return np.stack([np.sin(a), np.cos(a), np.sin(b), np.cos(b)], axis=1)


def scale(derived: Mapping[str, np.ndarray], spec: FeatureSpec, group: str | None = None) -> np.ndarray:
    """``(n, len(spec.inputs))`` float32: standardised with ``group``'s statistics, clipped to ±10 sd, NaN (or a
    missing input) as 0."""
    n = len(next(iter(derived.values()))) if derived else 0
    x = np.zeros((n, len(spec.inputs)), dtype=np.float64)
    mean, std = spec.input_stats(group)
    for j, name in enumerate(spec.inputs):
        v = derived.get(name)
        if v is not None:
            x[:, j] = (v - mean[j]) / std[j]
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -CLIP_SD, CLIP_SD)
    return x.astype(np.float32)


def raw_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(np.float64) for c in frame.columns if c not in META_COLUMNS}


def _moments(derived: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple[list[float], list[float]]:
    means, stds = [], []
    for name in names:
        v = derived[name]
        finite = v[np.isfinite(v)]
        means.append(float(finite.mean()) if len(finite) else 0.0)
        sd = float(finite.std()) if len(finite) > 1 else 0.0
        stds.append(sd if sd > 1e-12 else 1.0)
    return means, stds


def fit_spec(
    frame: pd.DataFrame,
    horizons: Sequence[int],
    quantiles: Sequence[float],
    encoder_length: int,
    vol_window: int = 0,
    only: Sequence[str] = (),
) -> FeatureSpec:
    """Input names, means and deviations (pooled and per symbol) from a (training) frame, inputs that are never
    finite left out (and, with ``only``, those not named there); target deviations per symbol and horizon, with
    ``vol_window`` the volatility reference first (:mod:`models.targets`)."""
    from models.targets import fit_vol_ref, target_deviations

    check_frame(frame)
    derived = derive(raw_columns(frame))
    names = [name for name, v in derived.items() if np.isfinite(v).any() and (not only or name in only)]
    means, stds = _moments(derived, names)
    keys = [f"{v}:{s}" for v, s in zip(frame["venue"], frame["symbol"], strict=True)]
    groups = sorted(set(keys))
    key_arr = np.asarray(keys)
    per_group = [_moments({n: derived[n][key_arr == g] for n in names}, names) for g in groups]
    width = int((frame["window_end"] - frame["window_start"]).iloc[0])
    qs = sorted({*map(float, quantiles), 0.5})  # the median is the point forecast
    spec = FeatureSpec(
        feature_set=str(frame["feature_set"].iloc[0]),
        inputs=tuple(names),
        mean=tuple(means),
        std=tuple(stds),
        horizons=tuple(sorted(set(horizons))),
        quantiles=tuple(qs),
        width_ns=width,
        encoder_length=encoder_length,
        groups=tuple(groups),
        group_mean=tuple(tuple(m) for m, _ in per_group),
        group_std=tuple(tuple(sd) for _, sd in per_group),
        vol_window=int(vol_window),
    )
    if spec.vol_window:
        spec = replace(spec, vol_ref=fit_vol_ref(prepare(frame, spec), spec))
    return replace(spec, target_sd=target_deviations(prepare(frame, spec), spec))


def prepare(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The TFT frame: ``series, group, time_idx, window_end, mid``, targets, time features, scaled inputs, and
    the volatility columns of :mod:`models.targets` (``vol``, ``log_vol``, ``vol_lag_h``).

    Only rows whose every target and target scale is known are kept (each segment loses its first
    ``max_h + vol_window`` rows).
    """
    from models.targets import vol_columns

    check_frame(frame)
    if str(frame["feature_set"].iloc[0]) != spec.feature_set:
        raise DataCheckError(f"feature set {frame['feature_set'].iloc[0]} but the model wants {spec.feature_set}")
    parts = []
    for (venue, symbol), g in frame.groupby(["venue", "symbol"], sort=True):
        g = g.sort_values("window_start")
        mid = g["mid"].to_numpy(np.float64) if "mid" in g else np.full(len(g), np.nan)
        ok = g["book_valid"].to_numpy(bool) & (mid > 0)
        g, mid = g[ok], mid[ok]
        if g.empty:
            continue
        tidx = g["window_start"].to_numpy(np.int64) // spec.width_ns
        segment = np.concatenate([[0], np.cumsum(np.diff(tidx) != 1)])
        logmid = np.log(mid)
        out = pd.DataFrame({"time_idx": tidx, "window_end": g["window_end"].to_numpy(np.int64), "mid": mid})
        group = out["group"] = f"{venue}:{symbol}"
        out["series"] = [f"{venue}:{symbol}#{s}" for s in segment]
        pos = pd.Series(segment).groupby(segment).cumcount().to_numpy()
        for h in spec.horizons:
            ret = np.full(len(g), np.nan)
            ret[h:] = logmid[h:] - logmid[:-h]
            ret[pos < h] = np.nan  # the row h back is in an earlier segment
            out[target_name(h)] = ret
        tf = time_features(out["window_end"].to_numpy())
        for j, name in enumerate(TIME_FEATURES):
            out[name] = tf[:, j]
        for name, v in vol_columns(logmid, pos, segment, spec, group).items():
            out[name] = v
        x = scale(derive(raw_columns(g)), spec, group)
        for j, name in enumerate(spec.inputs):
            out[name] = x[:, j]
        parts.append(out[pos >= spec.max_h + spec.vol_window])
    if not parts:
        raise DataCheckError("no row with a valid mid")
    prepared = pd.concat(parts, ignore_index=True)
    prepared["time_idx"] = prepared["time_idx"].astype(np.int64)
    return prepared


def long_enough(prepared: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Rows of the series long enough for one sample (encoder plus every decoder step)."""
    need = spec.encoder_length + spec.max_h
    sizes = prepared.groupby("series")["time_idx"].transform("size")
    return prepared[sizes >= need].reset_index(drop=True)
