"""The TFT's data path without training or services: feature-extract checks, targets, batches, predictor, gate.

A tiny untrained TFT (hidden size 8) is enough to check that our own batches give exactly what pytorch-forecasting's
dataset gives, that the online predictor gives exactly what the batched walk-forward gives, and the shapes.
"""

from __future__ import annotations

import doctest
import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

from ccf.forecast.scoring import Metrics
from ccf.schemas import FeatureRow, Prediction
from ccf.settings import Settings
from models import dataset as ds
from models.dataset import DataCheckError, FeatureSpec, check_frame, fit_spec, prepare, rows_to_frame
from models.evaluate import gate, score
from models.registry import LoadedModel
from models.retrain import next_run, parse_duration, rolling_window
from models.sources import frame_from_duckdb, frame_to_rows
from models.targets import unscale_quantiles
from tests.tiny_tft import kline_rows as tiny_tft_rows
from tests.tiny_tft import tiny_tft

pytestmark = [
    # pytorch-forecasting's encoders call torch.from_numpy on pandas 3's read-only (copy-on-write) arrays
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning"),
]

MIN = 60_000_000_000
DAYS = ("2025-11-01", "2025-11-02")


def _settings(**kw: Any) -> Settings:
    return Settings(_env_prefix="CCF_TEST_NOTHING_", **kw)


@pytest.fixture(scope="module")
def kline_rows() -> list[FeatureRow]:
    return tiny_tft_rows(*DAYS)


@pytest.fixture(scope="module", params=[0, 30], ids=["per-symbol", "vol-scaled"])
def tiny(kline_rows: list[FeatureRow], request: pytest.FixtureRequest) -> tuple[Any, FeatureSpec, pd.DataFrame, Any]:
    """An untrained tiny TFT, its spec, the prepared frame and the training dataset; targets scaled per symbol, or
    also by a 30-window volatility ratio."""
    t = tiny_tft(kline_rows, vol_window=request.param)
    return t.model, t.spec, t.prepared, t.train_ds


def _row(t: int, mid: float, symbol: str = "BTC-USDT", valid: bool = True, **feats: float) -> FeatureRow:
    return FeatureRow("binance", symbol, t * MIN, (t + 1) * MIN, "kline.v1", valid, 0,
                      {"mid": mid, "close": mid, "volume": 10.0 + t % 7, "range": 0.001 * (1 + t % 3), **feats})


def test_module_doctests() -> None:
    import models.evaluate
    import models.retrain
    import models.targets

    for mod in (ds, models.evaluate, models.retrain, models.targets):
        result = doctest.testmod(mod)
        assert result.failed == 0 and result.attempted > 0, mod.__name__


# -- data checks on the feature extract ------------------------------------------------------------------------------
def test_real_kline_extract_passes_the_data_checks(kline_rows: list[FeatureRow]) -> None:
    frame = rows_to_frame(kline_rows)
    assert len(frame) == 2 * 1440
    assert not frame.duplicated(["venue", "symbol", "window_start"]).any()  # no duplicate (symbol, ts)
    for _, g in frame.groupby(["venue", "symbol"]):
        assert g["window_start"].is_monotonic_increasing and g["window_start"].is_unique  # monotonic time
    assert (frame["window_end"] - frame["window_start"] == MIN).all()
    check_frame(frame)


def test_data_checks_name_the_problem() -> None:
    good = [_row(t, 100.0 + t) for t in range(5)]
    check_frame(rows_to_frame(good))
    with pytest.raises(DataCheckError, match="duplicate window 120000000000"):
        check_frame(rows_to_frame([*good, good[2]]))
    with pytest.raises(DataCheckError, match="backwards"):
        check_frame(rows_to_frame([good[0], good[2], good[1]]))
    with pytest.raises(DataCheckError, match="several feature sets"):
        check_frame(rows_to_frame([*good[:2], msgspec.structs.replace(good[2], feature_set="book.v1")]))
    with pytest.raises(DataCheckError, match="empty"):
        check_frame(rows_to_frame([]))


def test_rows_frame_round_trip_and_fingerprint(kline_rows: list[FeatureRow]) -> None:
    frame = rows_to_frame(kline_rows[:50])
    back = frame_to_rows(frame)
    for a, b in zip(kline_rows[:50], back, strict=True):
        assert (a.venue, a.symbol, a.window_start, a.window_end, a.book_valid) == (
            b.venue, b.symbol, b.window_start, b.window_end, b.book_valid)
        for k, v in a.features.items():
            assert (math.isnan(v) and math.isnan(b.features[k])) if v != v else b.features[k] == v
    assert ds.fingerprint(frame) == ds.fingerprint(rows_to_frame(kline_rows[:50]))
    assert ds.fingerprint(frame) != ds.fingerprint(rows_to_frame(kline_rows[1:51]))


# -- targets, segments, known features --------------------------------------------------------------------------------
def test_targets_are_backward_returns_and_gaps_split_series() -> None:
    mids = {t: 100.0 * math.exp(0.001 * t + 0.0005 * (t % 3)) for t in range(60)}
    rows = [_row(t, mids[t], valid=t != 33) for t in range(60) if t != 20]  # a missing window and an invalid book
    spec = fit_spec(rows_to_frame(rows), [1, 5], [0.1, 0.9], encoder_length=4)
    assert spec.quantiles == (0.1, 0.5, 0.9), "the median is always forecast"
    assert "mid" not in spec.inputs and "close" not in spec.inputs and "volume" in spec.inputs
    p = prepare(rows_to_frame(rows), spec)
    assert p["series"].nunique() == 3  # [0, 20), [21, 33), [34, 60)
    assert set(p.groupby("series")["time_idx"].min()) == {5, 26, 39}  # each segment loses its first max_h rows
    for _, r in p.iterrows():
        t = int(r["time_idx"])
        assert r["ret_1"] == pytest.approx(math.log(mids[t] / mids[t - 1]), abs=1e-12)
        assert r["ret_5"] == pytest.approx(math.log(mids[t] / mids[t - 5]), abs=1e-12)
    tf = ds.time_features(np.array([datetime(2025, 11, 3, 18, 0, tzinfo=UTC).timestamp() * 1e9], dtype=np.int64))
    assert tf[0] == pytest.approx([-1.0, 0.0, 0.0, 1.0], abs=1e-12)  # 18:00, a Monday


def test_scaling_statistics_come_from_the_training_rows_only() -> None:
    rows = [_row(t, 100.0 + t, volume=float(t)) for t in range(100)]
    spec = fit_spec(rows_to_frame(rows[:50]), [1], [0.5], encoder_length=4)
    j = spec.inputs.index("volume")
    assert spec.mean[j] == pytest.approx(np.mean(np.log1p(np.arange(50))))


# -- our batches == pytorch-forecasting's; online == batched; shapes ------------------------------------------------
def test_our_batch_gives_what_the_dataset_gives(tiny: tuple[Any, FeatureSpec, pd.DataFrame, Any]) -> None:
    import torch

    from models.network import Anchors, Layout, anchors, forecast_anchors, quiet_library_warnings

    model, spec, prepared, train_ds = tiny
    with quiet_library_warnings():
        x, _ = next(iter(train_ds.to_dataloader(train=False, batch_size=16, num_workers=0)))
        idx = train_ds.x_to_index(x)
        with torch.inference_mode():
            ref = model(x)["prediction"]
    ref_q = np.sort(torch.stack([r[:, h - 1, :] for r, h in zip(ref, spec.horizons, strict=True)], 1).numpy(), -1)
    frame = anchors(prepared, spec).frame
    key = {(s, t): i for i, (s, t) in enumerate(zip(frame["series"], frame["time_idx"], strict=True))}
    pos = np.array([key[(s, t - 1)] for s, t in zip(idx["series"], idx["time_idx"], strict=True)])  # anchor = t0 - 1
    # the dataset holds targets in units of their scale; ours come back as log-returns
    ref_q = unscale_quantiles(ref_q, spec, frame["group"].to_numpy()[pos], frame["vol"].to_numpy()[pos])
    mine = forecast_anchors(model, spec, Layout.of(model, spec), Anchors(frame, pos))
    assert mine.shape == (16, len(spec.horizons), len(spec.quantiles))
    np.testing.assert_allclose(mine, ref_q, rtol=1e-5, atol=1e-7)


def test_online_predictor_equals_batched_forecasts(tiny: tuple[Any, FeatureSpec, pd.DataFrame, Any],
                                                   kline_rows: list[FeatureRow]) -> None:
    from models.network import Layout, anchors, forecast_anchors
    from models.predict import Predictor

    model, spec, prepared, _ = tiny
    predictor = Predictor(LoadedModel("m", "7", "run", model, spec), quantiles=[0.1, 0.5, 0.9])
    # the network's own quantiles: the online calibration every model's bands go through (ccf.forecast.calibration,
    # tested there) is left out here
    predictor.calibration.calibrate = lambda p: p  # type: ignore[method-assign]
    rows = kline_rows[:200]
    online: list[Prediction] = []
    for r in rows:  # one step at a time, as live
        online += predictor.on_row(r)
    first_ready = spec.history - 1
    assert len(online) == (len(rows) - first_ready) * len(spec.horizons)
    a = anchors(prepared, spec)
    q = forecast_anchors(model, spec, Layout.of(model, spec), a)
    batched = {int(t): q[i] for i, t in enumerate(a.frame["window_end"].to_numpy()[a.positions])}
    for p in online:
        j = spec.horizons.index(p.horizon_steps)
        assert p.model == "tft" and p.model_version == "7"
        assert p.target_time == p.issued_at + p.horizon_steps * spec.width_ns
        assert p.horizon_s == p.horizon_steps * 60.0
        assert list(p.quantiles) == ["0.1", "0.5", "0.9"]
        assert p.quantiles["0.1"] <= p.value == p.quantiles["0.5"] <= p.quantiles["0.9"]
        np.testing.assert_allclose([p.quantiles[k] for k in ("0.1", "0.5", "0.9")], batched[p.issued_at][j],
                                   rtol=1e-5, atol=1e-8)
    assert len(predictor.latencies_s) == len(rows) - first_ready


def test_predictor_skips_unseen_symbols_gaps_and_bad_rows_without_crashing(
    tiny: tuple[Any, FeatureSpec, pd.DataFrame, Any], kline_rows: list[FeatureRow], caplog: pytest.LogCaptureFixture
) -> None:
    from models.predict import Predictor

    model, spec, _, _ = tiny
    predictor = Predictor(LoadedModel("m", "1", "run", model, spec))
    rows = kline_rows[:150]
    other = [msgspec.structs.replace(r, symbol="DOGE-USDT") for r in rows[:3]]
    book = msgspec.structs.replace(rows[0], feature_set="book.v1")
    with caplog.at_level(logging.INFO, logger="models.predict"):
        assert predictor.on_rows([*other, book]) == []
        n_before_gap = len(predictor.on_rows(rows[:100]))
        after_gap = predictor.on_rows(rows[110:150])  # 10 windows missing: the window restarts
        late = predictor.on_rows([rows[120]])
        invalid = predictor.on_rows([msgspec.structs.replace(kline_rows[150], book_valid=False)])
    assert n_before_gap == (100 - spec.history + 1) * len(spec.horizons)
    assert after_gap == [] and late == [] and invalid == []  # 40 rows < history after the gap
    assert predictor.skipped["unseen symbol"] == 3 and predictor.skipped["feature set"] == 1
    assert predictor.skipped["gap"] == 1 and predictor.skipped["out of order"] == 1
    assert predictor.skipped["invalid book"] == 1 and len(predictor.windows["binance:BTC-USDT"].rows) == 0
    text = caplog.text
    assert "binance:DOGE-USDT skipped: unseen symbol" in text and "10 window(s) missing" in text
    assert text.count("unseen symbol") == 1, "the same reason for the same symbol is logged once at WARNING"


def test_swapping_models_keeps_the_windows(tiny: tuple[Any, FeatureSpec, pd.DataFrame, Any],
                                           kline_rows: list[FeatureRow]) -> None:
    from models.predict import Predictor

    model, spec, _, _ = tiny
    predictor = Predictor(LoadedModel("m", "1", "run", model, spec))
    predictor.on_rows(kline_rows[:100])
    predictor.swap(LoadedModel("m", "2", "run2", model, spec))
    out = predictor.on_row(kline_rows[100])
    assert {p.model_version for p in out} == {"2"} and len(out) == len(spec.horizons)


# -- scoring and the gate ---------------------------------------------------------------------------------------------
def test_shared_scorer_sees_perfect_and_naive_forecasts(kline_rows: list[FeatureRow]) -> None:
    rows = kline_rows[:100]
    mids = {r.window_end: r.features["mid"] for r in rows}
    preds = []
    for r in rows[:-5]:
        y = math.log(mids[r.window_end + 5 * MIN] / mids[r.window_end])
        for model, v in (("perfect", y), ("naive", 0.0)):
            preds.append(Prediction(model, "1", r.venue, r.symbol, 5, 300.0, r.window_end, r.window_end + 5 * MIN,
                                    v, {"0.1": v - 1e-3, "0.5": v, "0.9": v + 1e-3}))
    table = score(rows, preds)
    assert table["perfect"][5].n == table["naive"][5].n == 95
    assert table["perfect"][5].skill == 1.0 and table["naive"][5].skill == 0.0
    assert table["perfect"][5].mae == 0.0


def test_gate_promotes_and_refuses() -> None:
    def m(sse: float) -> Metrics:
        return Metrics(n=10, sq_sum=sse, naive_sq_sum=1.0)

    first = gate({1: m(0.9), 5: m(0.95)}, None)
    assert first.promote and "no comparable champion" in first.reason
    assert gate({1: m(0.9)}, {1: m(0.95)}).promote
    refused = gate({1: m(0.97), 5: m(0.97)}, {1: m(0.9), 5: m(0.9)})
    assert not refused.promote and "champion" in refused.reason
    worse_than_naive = gate({1: m(1.1), 5: m(0.95)}, None)
    assert not worse_than_naive.promote and "naive" in worse_than_naive.reason
    assert not gate({1: m(0.9), 5: Metrics()}, None).promote  # a horizon with nothing scored
    assert not gate({1: m(0.99)}, None, min_gain=0.05).promote


# -- rolling retraining and the store ---------------------------------------------------------------------------------
def test_rolling_windows() -> None:
    now = datetime(2025, 11, 8, 13, 47, 12, tzinfo=UTC)
    assert rolling_window(now, timedelta(hours=1), timedelta(days=7)) == (
        datetime(2025, 11, 1, 13, tzinfo=UTC), datetime(2025, 11, 8, 13, tzinfo=UTC))
    assert rolling_window(now, timedelta(minutes=15), timedelta(hours=2))[1] == datetime(2025, 11, 8, 13, 45,
                                                                                            tzinfo=UTC)
    assert next_run(now, timedelta(hours=1)) == datetime(2025, 11, 8, 14, tzinfo=UTC)
    assert parse_duration("90s") == timedelta(seconds=90)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("1 hour")
    with pytest.raises(ValueError, match="timezone"):
        rolling_window(datetime(2025, 1, 1), timedelta(hours=1), timedelta(days=1))  # noqa: DTZ001


def test_features_read_back_from_the_embedded_store(tmp_path: Path, kline_rows: list[FeatureRow]) -> None:
    from ccf.store.duckdb_store import DuckDBStore
    from ccf.store.tables import feature_row_values, features_table

    store = DuckDBStore(tmp_path / "s.duckdb", [features_table()])
    store.upsert("features", [feature_row_values(r) for r in kline_rows[:300]])
    store.close()
    t0 = kline_rows[100].window_start
    frame = frame_from_duckdb(tmp_path / "s.duckdb", t0, t0 + 50 * MIN, ["binance:BTC-USDT"])
    assert len(frame) == 50 and frame["window_start"].iloc[0] == t0
    check_frame(frame)
    assert frame["mid"].tolist() == [r.features["mid"] for r in kline_rows[100:150]]  # the table has book columns
    assert frame_from_duckdb(tmp_path / "s.duckdb", None, None, ["binance:ETH-USDT"]).empty
