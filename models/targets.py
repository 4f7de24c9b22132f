"""Target scaling for the TFT: per symbol, and (optionally) by the volatility known when a forecast is issued.

The network learns ``ret_h / s_h`` and its quantiles are multiplied back by ``s_h``:

* ``s_h = sd_h(group)`` (``FeatureSpec.target_sd``) without volatility scaling (``vol_window = 0``): the symbol's
  training deviation of the ``h``-return, so symbols whose returns differ by orders of magnitude all learn at unit
  scale;
* ``s_h = sd_h(group) * v[t]`` with it, where ``t`` is the forecast's issue time and ``v[t]`` the *volatility
  ratio*: the root mean square of the last ``vol_window`` one-window log-returns up to ``t``, over the group's
  training mean of that RMS (``FeatureSpec.vol_ref``), clipped to ``[vol_floor, vol_cap]``. ``sd_h`` is then the
  deviation of ``ret_h / v``. Calm stretches (on a thin book most 1 s windows have no move) and bursts are then
  learnt at one scale; what a burst's returns do no longer dominates the loss, and the bands follow the
  volatility of the last minutes by construction.

A target ``ret_h`` sits on the row ``h`` windows after its issue time (see :mod:`models.dataset`), so each row
carries ``vol_lag_h = v[row - h]`` beside ``vol = v[row]``: the scale of every target, in the encoder and the
decoder, is known at the time the forecast it belongs to was issued (no look-ahead).

Quantiles stay ordered when multiplied back (``s_h > 0``), and with ``v = 1`` they are exactly the per-symbol ones:

>>> spec = FeatureSpec("f", (), (), (), (1,), (0.1, 0.5, 0.9), 1, 2, ("v:A",), target_sd=((2.0,),))
>>> unscale_quantiles(np.array([[[-1.0, 0.0, 1.5]]]), spec, ["v:A"], np.array([3.0]))[0, 0].tolist()
[-6.0, 0.0, 9.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.dataset import FeatureSpec, target_name

VOL = "vol"
LOG_VOL = "log_vol"


def vol_lag(h: int) -> str:
    return f"vol_lag_{h}"


def rolling_rms(logmid: np.ndarray, window: int) -> np.ndarray:
    """RMS of the last ``window`` one-step differences of ``logmid`` at each row (NaN before ``window`` of them).

    Each row's value is a sum over its own slice only, so a short history (the online predictor) and a long
    series (the batched walk-forward) give bit-identical values.

    >>> rolling_rms(np.log(np.array([1.0, 1.0, np.e, np.e])), 2).round(6).tolist()
    [nan, nan, 0.707107, 0.707107]
    """
    n = len(logmid)
    out = np.full(n, np.nan)
    if n <= window:
        return out
    r2 = np.diff(np.asarray(logmid, dtype=np.float64)) ** 2
    views = np.lib.stride_tricks.sliding_window_view(r2, window)
    out[window:] = np.sqrt(views.mean(axis=1))
    return out


def vol_ratio(logmid: np.ndarray, spec: FeatureSpec, group: str) -> np.ndarray:
    """``v`` at each row of one contiguous series (1 everywhere without volatility scaling; the raw RMS while the
    spec has no ``vol_ref`` yet, which is how :func:`models.dataset.fit_spec` measures it)."""
    if not spec.vol_window:
        return np.ones(len(logmid))
    rms = rolling_rms(logmid, spec.vol_window)
    if not spec.vol_ref:
        return rms
    return np.clip(rms / spec.vol_reference(group), spec.vol_floor, spec.vol_cap)


def vol_columns(logmid: np.ndarray, pos: np.ndarray, segment: np.ndarray, spec: FeatureSpec,
                group: str) -> dict[str, np.ndarray]:
    """``vol``, ``log_vol`` and ``vol_lag_h`` of a symbol's rows (``segment``: which contiguous series each row is
    in; ``pos``: its position there)."""
    v = np.full(len(logmid), np.nan)
    for s in np.unique(segment):
        rows = segment == s
        v[rows] = vol_ratio(logmid[rows], spec, group)
    out = {VOL: v, LOG_VOL: np.log(np.where(v > 0, v, np.nan))}
    for h in spec.horizons:
        lag = np.full(len(v), np.nan)
        lag[h:] = v[:-h]
        lag[pos < h] = np.nan
        out[vol_lag(h)] = lag
    return out


def fit_vol_ref(prepared: pd.DataFrame, spec: FeatureSpec) -> tuple[float, ...]:
    """Per group of ``spec.groups``: the mean raw RMS (``vol`` of a spec without ``vol_ref``) of its rows; a group
    without one (or a zero one) gets the mean over all groups, else 1."""
    def mean(v: np.ndarray) -> float:
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else 0.0

    every = mean(prepared[VOL].to_numpy(np.float64))
    out = []
    for g in spec.groups:
        m = mean(prepared.loc[prepared["group"] == g, VOL].to_numpy(np.float64))
        out.append(m if m > 1e-15 else every if every > 1e-15 else 1.0)
    return tuple(out)


def target_deviations(prepared: pd.DataFrame, spec: FeatureSpec) -> tuple[tuple[float, ...], ...]:
    """Per group of ``spec.groups``, per horizon: the deviation of ``ret_h / vol_lag_h`` (``ret_h`` without
    volatility columns) in ``prepared``; where a group has none (too few rows, or constant), the deviation over
    all groups, else 1.

    >>> spec = FeatureSpec("f", (), (), (), (1,), (0.5,), 1, 2, ("v:A", "v:B", "v:C"))
    >>> p = pd.DataFrame({"group": ["v:A"] * 2 + ["v:B"] * 2 + ["v:C"], "ret_1": [1e-6, -1e-6, 1e-3, -1e-3, 0.0]})
    >>> [f"{sd[0]:.0e}" for sd in target_deviations(p, spec)]
    ['1e-06', '1e-03', '6e-04']
    """
    def sd(v: np.ndarray) -> float:
        v = v[np.isfinite(v)]
        return float(v.std()) if len(v) > 1 else 0.0

    groups = prepared["group"].to_numpy()
    scaled = {h: _unit(prepared, h) for h in spec.horizons}
    out = []
    for g in spec.groups:
        rows = groups == g
        sds = []
        for h in spec.horizons:
            d = sd(scaled[h][rows])
            if not d > 1e-15:
                d = sd(scaled[h])
            sds.append(d if d > 1e-15 else 1.0)
        out.append(tuple(sds))
    return tuple(out)


def _unit(prepared: pd.DataFrame, h: int) -> np.ndarray:
    ret: np.ndarray = prepared[target_name(h)].to_numpy(np.float64)
    lag = vol_lag(h)
    return ret / prepared[lag].to_numpy(np.float64) if lag in prepared else ret


def target_scales(prepared: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """``(n, len(horizons))``: ``s_h`` of each row's targets (``sd_h(group) * vol_lag_h``)."""
    groups = prepared["group"].to_numpy()
    sd = np.ones((len(prepared), len(spec.horizons)))
    for g in np.unique(groups):
        sd[groups == g] = spec.target_scales(str(g))
    for j, h in enumerate(spec.horizons):
        if vol_lag(h) in prepared:
            sd[:, j] *= prepared[vol_lag(h)].to_numpy(np.float64)
    return sd


def scale_targets(prepared: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """A copy of a prepared frame with each target divided by its scale (:func:`target_scales`)."""
    out = prepared.copy()
    s = target_scales(prepared, spec)
    for j, t in enumerate(spec.targets):
        out[t] = out[t].to_numpy(np.float64) / s[:, j]
    return out


def window_vols(logmid: np.ndarray, spec: FeatureSpec, groups: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """From ``(B, history)`` log-mids of the online predictor's windows: each encoder row's ``vol`` ``(B, L)`` and
    ``vol_lag_h`` ``(B, L, len(horizons))``, as :func:`vol_columns` gives them on the whole series."""
    length, h_max = spec.encoder_length, spec.max_h
    v = np.stack([vol_ratio(row, spec, g) for row, g in zip(logmid, groups, strict=True)])[:, -(length + h_max):]
    lags = np.stack([v[:, h_max - h: h_max - h + length] for h in spec.horizons], axis=-1)
    return v[:, h_max:], lags


def unscale_quantiles(q: np.ndarray, spec: FeatureSpec, groups: Sequence[str], anchor_vol: np.ndarray) -> np.ndarray:
    """``(B, H, Q)`` quantiles in target units back to log-returns: times ``sd_h(group) * v[issue time]``."""
    sd = np.array([spec.target_scales(g) for g in groups], dtype=np.float64) * np.asarray(anchor_vol)[:, None]
    out: np.ndarray = np.asarray(q) * sd[:, :, None]
    return out
