"""The TFT's target scaling (:mod:`models.targets`) and its multi-symbol dataset, without training.

Targets divided by their scale and multiplied back are the targets; quantiles multiplied back stay ordered and, for
a constant volatility ratio, are exactly the per-symbol ones; the ratio at a row never depends on later rows; two
symbols of very different scales are standardised each on its own and go into one dataset as two groups.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ccf.schemas import FeatureRow
from models.dataset import fit_spec, prepare, rows_to_frame
from models.targets import scale_targets, target_scales, unscale_quantiles, vol_lag

pytestmark = [
    # pytorch-forecasting's encoders call torch.from_numpy on pandas 3's read-only (copy-on-write) arrays
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning"),
]

SEC = 1_000_000_000
SYMBOLS = {"QUIET-USDT": (2e-6, 10.0), "LOUD-USDT": (5e-4, 5000.0)}  # return sd, typical OFI
N = 400


def _rows(seed: int = 5) -> list[FeatureRow]:
    """Two tick-like symbols: mostly-zero returns with bursts, an imbalance and an OFI on their own scales."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, (symbol, (sd, ofi)) in enumerate(SYMBOLS.items()):
        burst = np.repeat(rng.random(N // 50) < 0.5, 50)
        moves = rng.normal(0.0, sd, N) * (rng.random(N) < np.where(burst, 0.6, 0.05))
        mids = 10.0 ** (k + 1) * np.exp(np.cumsum(moves))
        for t in range(N):
            rows.append(FeatureRow("testvenue", symbol, t * SEC, (t + 1) * SEC, "book.v1", True, 0, {
                "mid": mids[t], "microprice": mids[t] * (1 + rng.normal(0, sd)), "imbalance_1": rng.uniform(-1, 1),
                "ofi": rng.normal(0.0, ofi), "spread_bps": 1.0 + k + rng.random()}))
    return rows


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return rows_to_frame(_rows())


def test_scaled_targets_multiplied_back_are_the_targets(frame: pd.DataFrame) -> None:
    spec = fit_spec(frame, [1, 5], [0.1, 0.9], encoder_length=8, vol_window=20)
    assert spec.vol_window == 20 and len(spec.vol_ref) == 2 and all(v > 0 for v in spec.vol_ref)
    p = prepare(frame, spec)
    scaled = scale_targets(p, spec)
    back = scaled[list(spec.targets)].to_numpy() * target_scales(p, spec)
    np.testing.assert_allclose(back, p[list(spec.targets)].to_numpy(), rtol=1e-12, atol=0)
    for g in spec.groups:  # unit scale per symbol, whatever its returns' size
        sd = scaled.loc[scaled["group"] == g, "ret_1"].std(ddof=0)
        assert sd == pytest.approx(1.0, rel=1e-6), g


def test_back_transformed_quantiles_are_monotone_and_per_symbol_for_a_constant_ratio(frame: pd.DataFrame) -> None:
    plain = fit_spec(frame, [1, 5], [0.1, 0.9], encoder_length=8)
    vol = fit_spec(frame, [1, 5], [0.1, 0.9], encoder_length=8, vol_window=20)
    constant = replace(vol, vol_floor=1.0, vol_cap=1.0, target_sd=plain.target_sd)  # v = 1 at every row
    p_plain, p_const = prepare(frame, plain), prepare(frame, constant)
    assert (p_const["vol"] == 1.0).all()
    common = p_plain["time_idx"].isin(p_const["time_idx"]).to_numpy()  # the vol spec needs 20 more rows first
    for t in plain.targets:
        a = scale_targets(p_plain, plain)[t].to_numpy()[common]
        b = scale_targets(p_const, constant)[t].to_numpy()
        np.testing.assert_array_equal(np.sort(a), np.sort(b))
    rng = np.random.default_rng(0)
    q = np.sort(rng.normal(size=(50, 2, 3)), axis=-1)
    groups = list(rng.choice(vol.groups, 50))
    ratio = rng.uniform(vol.vol_floor, vol.vol_cap, 50)
    out = unscale_quantiles(q, vol, groups, ratio)
    assert (np.diff(out, axis=-1) >= 0).all(), "quantiles stay ordered"
    want = q * np.array([plain.target_scales(g) for g in groups])[:, :, None]
    np.testing.assert_array_equal(unscale_quantiles(q, constant, groups, np.ones(50)), want)


def test_the_ratio_at_a_row_is_known_at_that_row(frame: pd.DataFrame) -> None:
    spec = fit_spec(frame, [1, 5], [0.5], encoder_length=8, vol_window=20)
    p = prepare(frame, spec)
    for _, g in p.groupby("series"):
        v = g["vol"].to_numpy()
        assert (v >= spec.vol_floor).all() and (v <= spec.vol_cap).all()
        for h in spec.horizons:
            np.testing.assert_array_equal(g[vol_lag(h)].to_numpy()[h:], v[:-h])
    # changing the mids after row 250 changes no ratio, scale or input at or before it
    later = frame.copy()
    after = later["window_start"] > 250 * SEC
    later.loc[after, "mid"] *= np.exp(np.random.default_rng(1).normal(0, 1e-3, int(after.sum())))
    q = prepare(later, spec)
    upto = p["time_idx"] <= 250
    cols = ["vol", *[vol_lag(h) for h in spec.horizons], *spec.inputs]
    pd.testing.assert_frame_equal(p.loc[upto, cols].reset_index(drop=True), q.loc[upto, cols].reset_index(drop=True))


def test_two_symbols_one_dataset_each_standardised_on_its_own(frame: pd.DataFrame) -> None:
    from models.network import build_datasets, quiet_library_warnings

    spec = fit_spec(frame, [1, 5], [0.1, 0.9], encoder_length=8, vol_window=20)
    assert spec.groups == ("testvenue:LOUD-USDT", "testvenue:QUIET-USDT")
    assert "ofi" in spec.inputs and "micro_dev" in spec.inputs
    p = prepare(frame, spec)
    j, k = spec.inputs.index("ofi"), spec.inputs.index("spread_bps")
    assert spec.group_std[0][j] > 2 * spec.group_std[1][j], "signed-log OFI's deviation is each symbol's own"
    assert spec.group_mean[0][k] - spec.group_mean[1][k] == pytest.approx(1.0, abs=0.1), "and the spread's mean"
    for g, rows in p.groupby("group"):
        x = rows[list(spec.inputs)]
        assert x.mean().abs().max() < 0.2 and ((x.std() - 1).abs() < 0.2).all(), g
    assert p["series"].nunique() == 2 and set(p["group"]) == set(spec.groups)
    with quiet_library_warnings():
        train_ds, val_ds = build_datasets(p, spec, int(p["time_idx"].max()) - 60)
    assert val_ds is not None
    assert set(spec.groups) <= set(train_ds._categorical_encoders["group"].classes_)  # the fitted one
    seen = {str(g) for g in train_ds.decoded_index["series"]}
    assert {s.split("#")[0] for s in seen} == set(spec.groups)
