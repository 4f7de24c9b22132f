"""Walk-forward: train on files A, forecast files B step by step, score every model with the shared scorer, report.

Features of A and B come from one pass of the same engines (B continues A's state, as a live run would); with
``test_from_ns`` the files are one stream cut in time there (a long capture: train on its first hours). The TFT is
fitted on A only (its last ``val_fraction`` of time for early stopping). In B, every window with a full encoder
behind it is an anchor: the TFT forecasts there using only rows up to the anchor (the encoder may reach back into
A). The River baselines learn online through A and B, as they do in the flow. All models are scored by
:class:`ccf.forecast.scoring.Scorer` on the same anchors and targets inside B. ``DIR/report.html`` and
``DIR/report.md`` show the table per horizon, forecasts with quantile bands against what was realised, skill per
horizon and the calibration of the bands (PNGs beside them). It writes the tables of a plain backtest
(:mod:`ccf.backtest`): ``features.parquet`` (train and test rows), ``predictions.parquet`` (every model's forecasts
at the test anchors) and ``scores.parquet`` (one row per model and horizon, pooled over the symbols: ``symbol`` is
``*``), and ``summary.json`` with the numbers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ccf.progress import Progress, progress
from ccf.report import write_report
from ccf.settings import Settings
from models.dataset import rows_to_frame
from models.evaluate import ScoreTable, baseline_predictions, quantile_calibration, score, table_rows
from models.plots import bands_figure, calibration_figure, coverage_figure, loss_figure, skill_figure
from models.sources import FeatureEngines, engine_config, rows_from_files

logger = logging.getLogger(__name__)


def run_walkforward(
    train_inputs: Sequence[Path],
    test_inputs: Sequence[Path],
    out_dir: Path,
    settings: Settings,
    models: Sequence[str] | None = None,
    config: Any | None = None,
    band_hours: float = 12.0,
    test_from_ns: int | None = None,
) -> dict[str, Any]:
    """Train on ``train_inputs``, forecast and score ``test_inputs``; write the report to ``out_dir``. With
    ``test_from_ns``, all the files are one stream split in time there instead (train before, test from it on)."""
    from models.train import TrainConfig

    cfg = config or TrainConfig(checkpoint_dir=out_dir / "checkpoints")
    models = list(settings.forecast.models if models is None else models)
    if "naive" not in models:
        models.insert(0, "naive")
    t_start = time.perf_counter()
    with progress("walk-forward: features", total=4, unit="stages") as bar:
        summary = _run(train_inputs, test_inputs, out_dir, settings, models, cfg, band_hours, bar, t_start,
                       test_from_ns)
    logger.info("walk-forward: %d anchors scored -> %s", summary["anchors"], out_dir)
    return summary


def _run(train_inputs: Sequence[Path], test_inputs: Sequence[Path], out_dir: Path, settings: Settings,
         models: list[str], cfg: Any, band_hours: float, bar: Progress, t_start: float,
         test_from_ns: int | None) -> dict[str, Any]:
    from models.train import fit, forecast_window

    paths = [*train_inputs, *test_inputs]
    engines = FeatureEngines(engine_config(settings, paths))
    if test_from_ns is None:
        rows_a = rows_from_files(train_inputs, settings, engines)
        rows_b = rows_from_files(test_inputs, settings, engines)
    else:
        every = rows_from_files(paths, settings, engines)
        rows_a = [r for r in every if r.window_start < test_from_ns]
        rows_b = [r for r in every if r.window_start >= test_from_ns]
    if not rows_a or not rows_b:
        raise ValueError(f"no feature rows from {'the train' if not rows_a else 'the test'} inputs")
    test_start = min(r.window_start for r in rows_b)
    if max(r.window_start for r in rows_a) >= test_start:
        raise ValueError("the test inputs must come after the train inputs in time")
    frame_a = rows_to_frame(rows_a)
    bar.advance(1)
    bar.describe("walk-forward: training the TFT")
    fitted = fit(frame_a, settings, cfg)
    t_fit = time.perf_counter()
    bar.advance(1)
    bar.describe("walk-forward: forecasting the test")
    rows = rows_a + rows_b
    spec = fitted.spec
    wf = forecast_window(fitted.model, spec, rows_to_frame(rows), test_start // spec.width_ns, "walkforward",
                         settings.forecast.quantiles)
    t_fc = time.perf_counter()
    bar.advance(1)
    bar.describe("walk-forward: scoring and report")
    preds = wf.predictions + baseline_predictions(rows, settings, models)
    table = score(rows, preds, wf.anchors)
    calib = quantile_calibration(rows, preds, settings.forecast.quantiles, wf.anchors)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "train_inputs": [str(p) for p in train_inputs],
        "test_inputs": [str(p) for p in test_inputs],
        "train_rows": len(rows_a),
        "test_rows": len(rows_b),
        "anchors": len(wf.issued_at),
        "feature_set": spec.feature_set,
        "inputs": list(spec.inputs),
        "encoder_length": spec.encoder_length,
        "vol_window": spec.vol_window,
        "groups": list(spec.groups),
        "epochs": len(fitted.history),
        "epoch_seconds": [round(s, 2) for s in fitted.epoch_seconds],
        "fit_seconds": round(t_fit - t_start, 1),
        "forecast_seconds": round(t_fc - t_fit, 1),
        "config": {k: str(v) for k, v in vars(cfg).items()},
        "scores": table_rows(table),
        "calibration": calib,
    }
    _write_tables(out_dir, rows, preds, summary["scores"], settings)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    images = _plots(out_dir, fitted, wf, table, calib, settings.forecast.quantiles, band_hours)
    summary["report"] = str(write_report(out_dir, "Walk-forward report", _intro(summary), summary["scores"], images))
    bar.advance(1)
    return summary


def _plots(out_dir: Path, fitted: Any, wf: Any, table: ScoreTable, calib: dict[str, dict[int, list[float]]],
           quantiles: Sequence[float], band_hours: float) -> list[tuple[str, str]]:
    spec = fitted.spec
    images: list[tuple[str, str]] = []

    def save(fig: Any, name: str, caption: str) -> None:
        fig.savefig(out_dir / name)
        images.append((name, caption))

    n_band = int(band_hours * 3600e9 // spec.width_ns)
    first = wf.groups == wf.groups[0] if len(wf.groups) else np.zeros(0, dtype=bool)
    sel = np.flatnonzero(first)[-n_band:]
    for j, h in enumerate(spec.horizons):
        if h not in (spec.horizons[0], spec.horizons[-1]) or not len(sel):
            continue
        save(bands_figure(wf.issued_at[sel], wf.realised[sel, j], wf.q[sel, j], spec.quantiles, h,
                          spec.width_ns / 1e9),
             f"bands_h{h}.png", f"{wf.groups[0]}: TFT median and {min(spec.quantiles):g}–{max(spec.quantiles):g} "
             f"band vs the realised {h}-step return, last {band_hours:g} h of the test")
    save(skill_figure(table), "skill.png", "Skill vs naive per horizon (1 - SSE/SSE(naive), same targets)")
    save(coverage_figure(table, max(quantiles) - min(quantiles)), "coverage.png",
         "Coverage of each model's outer quantile band per horizon")
    if calib:
        save(calibration_figure(list(quantiles), calib), "calibration.png",
             "Calibration: share of realised returns at or below each forecast quantile")
    if fitted.history:
        save(loss_figure(fitted.history), "loss.png", "TFT training and validation loss per epoch")
    return images


def _write_tables(out_dir: Path, rows: Sequence[Any], preds: Sequence[Any], scores: Sequence[dict[str, Any]],
                  settings: Settings) -> None:
    """The parquet tables of a plain backtest, with the column names of the store's tables."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ccf.store.tables import SCORES, feature_row_values, prediction_values

    pq.write_table(pa.Table.from_pylist([feature_row_values(r) for r in rows]), out_dir / "features.parquet")
    pq.write_table(pa.Table.from_pylist([prediction_values(p, settings.forecast.quantiles) for p in preds]),
                   out_dir / "predictions.parquet")
    end = max(r.window_end for r in rows)
    fixed = {"window_end": end, "venue": "*", "symbol": "*"}
    pooled = [{c: fixed.get(c, r.get("horizon" if c == "horizon_steps" else c)) for c in SCORES.column_names}
              for r in scores]
    pq.write_table(pa.Table.from_pylist(pooled), out_dir / "scores.parquet")


def _intro(summary: dict[str, Any]) -> str:
    return (f"Train: {summary['train_rows']} rows; test: {summary['test_rows']} rows, {summary['anchors']} TFT "
            f"anchors scored with the shared scorer. TFT on {', '.join(summary['groups'])}: encoder "
            f"{summary['encoder_length']} windows, targets volatility-scaled over {summary['vol_window']} windows "
            f"(0: per symbol only), inputs "
            f"{', '.join(summary['inputs'])}; {summary['epochs']} epoch(s), "
            f"{np.mean(summary['epoch_seconds']) if summary['epoch_seconds'] else 0:.1f} s per epoch; "
            f"fit {summary['fit_seconds']} s, forecasting the test {summary['forecast_seconds']} s.")
