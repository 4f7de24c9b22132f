"""Feature rows → the TFT's training frame: data checks, targets, known time features, scaled inputs.

Target (what every CCF model forecasts): the mid log-return from a window's end to ``h`` windows later. A TFT
predicts a column's value at each of the next ``max_prediction_length`` steps, so for each horizon ``h`` the frame
carries the *backward* return ``ret_h[t] = log(mid[t] / mid[t - h])``: at decoder step ``h`` (time ``t + h``) it is
exactly the forward return ``log(mid[t + h] / mid[t])`` from the anchor ``t``, and in the encoder it is past data
only (no look-ahead). One target per horizon, ``max_prediction_length = max(horizons)``, and the loss of target
``ret_h`` counts only decoder step ``h`` (:class:`models.network.HorizonQuantileLoss`).

Target scale: the network learns each target divided by its symbol's training deviation (``FeatureSpec.target_sd``,
one per group and horizon) and its forecasts are multiplied back by it (:func:`models.network.make_batch`), so
symbols whose returns differ by orders of magnitude are all learnt at unit scale. pytorch-forecasting's own
``standard`` normalisers cannot do this: they add float16's eps (``9.8e-4``) to the deviation, which swamps
returns of ``1e-6``, so the network saw flat targets and its forecasts carried offsets far larger than the moves.

Inputs: known reals are the time of day and day of week (sin/cos) of each window's end; unknown reals are the
targets and the market features, made scale-free (price levels dropped or turned into bps deviations from the mid,
sizes and counts ``log1p``-ed) and standardised with means and deviations fitted on the training part only.

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
SIGNED_LOG = frozenset({"ofi", "signed_volume"})
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
        """Rows a symbol needs before its first forecast: the encoder plus ``max_h`` to compute its targets."""
        return self.encoder_length + self.max_h

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
            target_sd=tuple(tuple(float(v) for v in sd) for sd in d.get("target_sd", ())),
        )


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


def scale(derived: Mapping[str, np.ndarray], spec: FeatureSpec) -> np.ndarray:
    """``(n, len(spec.inputs))`` float32: standardised, clipped to ±10 sd, NaN (or a missing input) as 0."""
    n = len(next(iter(derived.values()))) if derived else 0
    x = np.zeros((n, len(spec.inputs)), dtype=np.float64)
    for j, name in enumerate(spec.inputs):
        v = derived.get(name)
        if v is not None:
            x[:, j] = (v - spec.mean[j]) / spec.std[j]
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -CLIP_SD, CLIP_SD)
    return x.astype(np.float32)


def raw_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(np.float64) for c in frame.columns if c not in META_COLUMNS}


def fit_spec(
    frame: pd.DataFrame,
    horizons: Sequence[int],
    quantiles: Sequence[float],
    encoder_length: int,
) -> FeatureSpec:
    """Input names, means and deviations from a (training) frame; inputs that are never finite are left out."""
    check_frame(frame)
    derived = derive(raw_columns(frame))
    names, means, stds = [], [], []
    for name, v in derived.items():
        finite = v[np.isfinite(v)]
        if len(finite) == 0:
            continue
        names.append(name)
        means.append(float(finite.mean()))
        sd = float(finite.std())
        stds.append(sd if sd > 1e-12 else 1.0)
    width = int((frame["window_end"] - frame["window_start"]).iloc[0])
    groups = sorted({f"{v}:{s}" for v, s in zip(frame["venue"], frame["symbol"], strict=True)})
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
    )
    return replace(spec, target_sd=target_deviations(prepare(frame, spec), spec))


def target_deviations(prepared: pd.DataFrame, spec: FeatureSpec) -> tuple[tuple[float, ...], ...]:
    """Per group of ``spec.groups``, per horizon: the deviation of ``ret_h`` in ``prepared``; where a group has
    none (too few rows, or constant), the deviation over all groups, else 1.

    >>> spec = FeatureSpec("f", (), (), (), (1,), (0.5,), 1, 2, ("v:A", "v:B", "v:C"))
    >>> p = pd.DataFrame({"group": ["v:A"] * 2 + ["v:B"] * 2 + ["v:C"], "ret_1": [1e-6, -1e-6, 1e-3, -1e-3, 0.0]})
    >>> [f"{sd[0]:.0e}" for sd in target_deviations(p, spec)]
    ['1e-06', '1e-03', '6e-04']
    """
    out = []
    for g in spec.groups:
        rows = prepared[prepared["group"] == g]
        sds = []
        for t in spec.targets:
            v = rows[t].to_numpy(np.float64)
            v = v[np.isfinite(v)]
            sd = float(v.std()) if len(v) > 1 else 0.0
            if not sd > 1e-15:
                allv = prepared[t].to_numpy(np.float64)
                allv = allv[np.isfinite(allv)]
                sd = float(allv.std()) if len(allv) > 1 else 0.0
            sds.append(sd if sd > 1e-15 else 1.0)
        out.append(tuple(sds))
    return tuple(out)


def prepare(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The TFT frame: ``series, group, time_idx, window_end, mid``, targets, time features, scaled inputs.

    Only rows whose every target is known are kept (each segment loses its first ``max_h`` rows).
    """
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
        out["group"] = f"{venue}:{symbol}"
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
        x = scale(derive(raw_columns(g)), spec)
        for j, name in enumerate(spec.inputs):
            out[name] = x[:, j]
        parts.append(out[pos >= spec.max_h])
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
