"""A tiny untrained TFT (hidden size 8) on real klines, for tests that need a network but not a trained one; and a
pickle that writes a file when loaded, what a forged model would do."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ccf.schemas import FeatureRow
from ccf.settings import Settings
from models.dataset import FeatureSpec, fit_spec, prepare, rows_to_frame
from models.sources import rows_from_files
from tests.datafiles import data_dir


@dataclass(frozen=True)
class TinyTFT:
    model: Any
    spec: FeatureSpec
    prepared: pd.DataFrame
    train_ds: Any


def kline_rows(*days: str) -> list[FeatureRow]:
    """The shared Binance BTCUSDT 1-minute klines of ``days`` (``2025-11-01``) as feature rows."""
    files = [data_dir() / "binance_spot_btcusdt_1m_klines" / f"BTCUSDT-1m-{d}.csv.gz" for d in days]
    return rows_from_files(files, Settings(_env_prefix="CCF_TEST_NOTHING_"))


def tiny_tft(rows: list[FeatureRow], hidden_size: int = 8, seed: int = 0, vol_window: int = 0) -> TinyTFT:
    """An untrained TFT on ``rows`` (encoder 24 windows, horizons 1/5/10/20, quantiles 0.1/0.5/0.9, targets
    volatility-scaled over ``vol_window`` windows when it is not 0), in eval mode."""
    import torch

    from models.network import NetConfig, build_datasets, build_network, quiet_library_warnings

    torch.set_num_threads(1)  # tiny matrices: one thread beats two (and does not fight other processes)
    torch.manual_seed(seed)
    frame = rows_to_frame(rows)
    spec = fit_spec(frame, [1, 5, 10, 20], [0.1, 0.5, 0.9], encoder_length=24, vol_window=vol_window)
    prepared = prepare(frame, spec)
    with quiet_library_warnings():
        train_ds, _ = build_datasets(prepared, spec, None)
        model = build_network(train_ds, spec, NetConfig(hidden_size=hidden_size, attention_heads=1,
                                                        hidden_continuous_size=4))
    model.eval()
    return TinyTFT(model, spec, prepared, train_ds)


def forecasts(model: Any, tiny: TinyTFT, last: int = 50) -> Any:
    """``model``'s forecasts ``(last, horizons, quantiles)`` at the last ``last`` anchors of ``tiny``'s frame."""
    from models.network import Layout, anchors, forecast_anchors

    a = anchors(tiny.prepared, tiny.spec)
    a = type(a)(a.frame, a.positions[-last:])
    return forecast_anchors(model, tiny.spec, Layout.of(model, tiny.spec), a)


class WritesMarker:
    """Unpickling this writes a file: what a forged model would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


def evil_pickle(marker: Path) -> bytes:
    """A pickle that writes ``marker`` when loaded (checked live on another path first: a test that then finds no marker means something)."""
    probe = marker.with_name(marker.name + ".probe")
    pickle.loads(pickle.dumps(WritesMarker(probe)))  # our own payload, to show that it runs
    assert probe.read_text() == "unpickled"
    probe.unlink()
    return pickle.dumps(WritesMarker(marker))
