"""The TFT on symbols whose returns differ by orders of magnitude: no offset larger than the moves.

Two random-walk symbols, one with one-window log-returns of ``2e-7`` (like BTC-USDT on the synthetic venue) and one
of ``2e-4`` (like real 1-minute klines). Targets are learnt in units of each symbol's own deviation
(``FeatureSpec.target_sd``); pytorch-forecasting's ``standard`` normaliser, which adds float16's eps (``9.8e-4``) to
the scale, made the network see flat targets and forecast offsets of ``1e-5`` on the quiet symbol. Also: our own
batches (:func:`models.network.forecast_anchors`, shared with the online predictor) give what the library's own
``predict`` gives on the same windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ccf.schemas import FeatureRow
from ccf.settings import Settings
from models.dataset import fit_spec, prepare, rows_to_frame
from models.targets import target_deviations

pytestmark = [
    # pytorch-forecasting's encoders call torch.from_numpy on pandas 3's read-only (copy-on-write) arrays
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning"),
]

MIN = 60_000_000_000
SD = {"QUIET-USDT": 2e-7, "LOUD-USDT": 2e-4}
N = 700


def _rows(seed: int = 3) -> list[FeatureRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for k, (symbol, sd) in enumerate(SD.items()):
        mids = 100.0 * (k + 1) * np.exp(np.cumsum(rng.normal(0.0, sd, N)))
        vol = rng.lognormal(2.0, 0.5, N)
        for t in range(N):
            rows.append(FeatureRow("testvenue", symbol, t * MIN, (t + 1) * MIN, "kline.v1", True, 0,
                                   {"mid": mids[t], "close": mids[t], "volume": vol[t], "range": 3 * sd * vol[t]}))
    return rows


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch

    from models.network import NetConfig
    from models.train import TrainConfig, fit

    torch.set_num_threads(1)
    settings = Settings(_env_prefix="CCF_TEST_NOTHING_", forecast={"horizons": [1, 5]})
    cfg = TrainConfig(encoder_length=24, net=NetConfig(hidden_size=8, attention_heads=1, hidden_continuous_size=4),
                      max_epochs=2, patience=2, limit_train_batches=25, progress=False, accelerator="cpu",
                      checkpoint_dir=Path(tmp_path_factory.mktemp("ck")))
    return fit(rows_to_frame(_rows()), settings, cfg)


def test_target_deviations_are_per_symbol() -> None:
    frame = rows_to_frame(_rows())
    spec = fit_spec(frame, [1, 5], [0.1, 0.5, 0.9], encoder_length=24)
    sd = dict(zip(spec.groups, spec.target_sd, strict=True))
    for symbol, want in SD.items():
        h1, h5 = sd[f"testvenue:{symbol}"]
        assert h1 == pytest.approx(want, rel=0.1) and h5 == pytest.approx(want * 5**0.5, rel=0.15)
    assert target_deviations(prepare(frame, spec), spec) == spec.target_sd
    assert spec.from_dict(spec.to_dict()) == spec


def test_our_forecasts_equal_the_librarys_predict(fitted: Any) -> None:
    from models.network import Anchors, Layout, anchors, build_datasets, forecast_anchors, quiet_library_warnings

    model, spec = fitted.model, fitted.spec
    _, val_ds = build_datasets(fitted.prepared, spec, fitted.val_start_idx)
    with quiet_library_warnings():
        out = model.predict(val_ds, mode="quantiles", return_index=True,
                            trainer_kwargs={"accelerator": "cpu", "logger": False, "enable_progress_bar": False})
    index: pd.DataFrame = out.index
    frame = anchors(fitted.prepared, spec).frame
    key = {(s, t): i for i, (s, t) in enumerate(zip(frame["series"], frame["time_idx"], strict=True))}
    pos = np.array([key[(s, t - 1)] for s, t in zip(index["series"], index["time_idx"], strict=True)])
    mine = forecast_anchors(model, spec, Layout.of(model, spec), Anchors(frame, pos))
    # the library's predict is in the dataset's units: each group's deviations
    sd = np.array([spec.target_scales(g) for g in frame["group"].to_numpy()[pos]])
    ref = np.sort(np.stack([o[:, h - 1, :].numpy() for o, h in zip(out.output, spec.horizons, strict=True)], 1), -1)
    ref = ref * sd[:, :, None]
    assert len(pos) > 100 and set(frame["group"].to_numpy()[pos]) == {f"testvenue:{s}" for s in SD}
    np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=0)


def test_forecasts_are_on_each_symbols_own_scale(fitted: Any) -> None:
    """After brief training the h=1 median's bias is well below each symbol's realised moves, and it does no worse
    than forecasting no move (the walks are unpredictable: no skill to find, but none to lose either)."""
    from models.network import Layout, anchors, forecast_anchors, realised_returns

    model, spec = fitted.model, fitted.spec
    a = anchors(fitted.prepared, spec, min_time_idx=fitted.val_start_idx)
    q = forecast_anchors(model, spec, Layout.of(model, spec), a)
    real = realised_returns(a, spec)[:, 0]
    median = q[:, 0, spec.quantiles.index(0.5)]
    groups = a.frame["group"].to_numpy()[a.positions]
    for symbol, want_sd in SD.items():
        k = (groups == f"testvenue:{symbol}") & np.isfinite(real)
        assert k.sum() > 50
        realised_sd = float(real[k].std())
        assert realised_sd == pytest.approx(want_sd, rel=0.25)
        bias = float(np.mean(median[k] - real[k]))
        assert abs(bias) < 0.5 * realised_sd, (symbol, bias, realised_sd)
        assert float(np.mean(np.abs(median[k]))) < 0.5 * realised_sd, symbol
        assert np.mean(np.abs(median[k] - real[k])) < 1.2 * np.mean(np.abs(real[k])), symbol


def test_a_trained_model_saved_as_weights_and_json_forecasts_the_same(fitted: Any, tmp_path: Path) -> None:
    """Both symbols' deviations and the trained weights survive models/artifact.py's round trip exactly."""
    from models.artifact import load_model, save_model
    from models.network import Layout, anchors, forecast_anchors

    save_model(fitted.model, fitted.spec, tmp_path / "model")
    model, spec = load_model(tmp_path / "model")
    assert spec == fitted.spec
    a = anchors(fitted.prepared, spec, min_time_idx=fitted.val_start_idx)
    want = forecast_anchors(fitted.model, spec, Layout.of(fitted.model, spec), a)
    assert len(a.positions) > 100
    assert np.array_equal(forecast_anchors(model, spec, Layout.of(model, spec), a), want)
