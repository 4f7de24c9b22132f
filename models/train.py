"""``ccf train``: feature rows → a TFT → MLflow (params, metrics, fingerprint, plots, a registered version) → gate.

:func:`fit` trains on the earlier part of a frame and keeps its last ``val_fraction`` of time for validation (early
stopping and the gate); scaling statistics come from the training part only. :func:`train` adds the rest: it scores
the validation window for the TFT, naive, the River baselines and the current champion with the shared scorer,
logs everything to MLflow, registers the version, and moves the ``champion`` alias when :func:`models.evaluate.gate`
says so. Retraining on a rolling window (``ccf train --every``) is :mod:`models.retrain`.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ccf.forecast.baselines import LR_FEATURES
from ccf.settings import Settings
from models.dataset import FeatureSpec, check_frame, fingerprint, fit_spec, prepare
from models.evaluate import (
    GateDecision,
    ScoreTable,
    baseline_predictions,
    gate,
    quantile_calibration,
    score,
    tft_predictions,
)
from models.network import (
    Layout,
    NetConfig,
    anchors,
    build_datasets,
    build_network,
    forecast_anchors,
    realised_returns,
)
from models.sources import frame_to_rows

logger = logging.getLogger(__name__)

LR_INPUTS = LR_FEATURES
"""The River linear model's inputs (order-book imbalance, OFI, microprice deviation, ...): on 1 s ticks the inputs
that carry a signal, and a TFT with few inputs trains several times faster on a CPU."""


@dataclass
class TrainConfig:
    encoder_length: int = 60
    vol_window: int = 0  # volatility-scaled targets over this many windows (models.targets); 0: per symbol only
    inputs: tuple[str, ...] = ()  # the market inputs to keep (LR_INPUTS: the River linear model's); empty: all
    net: NetConfig = field(default_factory=NetConfig)
    batch_size: int = 128
    max_epochs: int = 20
    patience: int = 3
    max_minutes: float | None = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    val_fraction: float = 0.15
    accelerator: str = "auto"
    progress: bool = True
    seed: int = 7
    checkpoint_dir: Path = Path(".ccf/tft-checkpoints")
    gradient_clip: float = 0.1
    min_gain: float = 0.0


@dataclass
class Fitted:
    model: Any
    spec: FeatureSpec
    prepared: pd.DataFrame
    val_start_idx: int
    history: list[dict[str, float | None]]
    checkpoint: Path | None
    fingerprint: str

    @property
    def epoch_seconds(self) -> list[float]:
        return [float(e["seconds"] or 0.0) for e in self.history]


@dataclass
class TrainResult:
    fitted: Fitted
    scores: ScoreTable
    decision: GateDecision
    run_id: str | None = None
    version: str | None = None


def _callbacks(spec: FeatureSpec, history: list[dict[str, float | None]], best: dict[str, Any]) -> list[Any]:
    """Per-epoch history; and, at each checkpoint (with ``save_top_k=1``: each new best), the spec written into it
    and a copy of its weights kept in ``best``, so :func:`fit` restores the best epoch without reading the file."""
    from lightning.pytorch.callbacks import Callback

    class EpochHistory(Callback):
        t0 = 0.0

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            m = trainer.callback_metrics

            def get(k: str) -> float | None:
                return float(m[k]) if k in m else None

            e = {"epoch": float(trainer.current_epoch), "seconds": time.perf_counter() - self.t0,
                 "train_loss": get("train_loss_epoch") or get("train_loss"), "val_loss": get("val_loss")}
            history.append(e)
            logger.info("epoch %d: train loss %s, val loss %s, %.1f s", trainer.current_epoch, e["train_loss"],
                        e["val_loss"], e["seconds"])

    class SpecInCheckpoint(Callback):
        def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
            checkpoint["ccf_spec"] = spec.to_dict()
            best.clear()
            best.update({k: v.detach().cpu().clone() for k, v in checkpoint["state_dict"].items()})

    return [EpochHistory(), SpecInCheckpoint()]


def fit(frame: pd.DataFrame, settings: Settings, cfg: TrainConfig) -> Fitted:
    """Train a TFT on ``frame`` (a feature extract, see :mod:`models.dataset`); returns the best checkpoint's model."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from models.network import quiet_library_warnings

    check_frame(frame)
    t0, t1 = int(frame["window_start"].min()), int(frame["window_end"].max())
    val_start_ns = t1 - int((t1 - t0) * cfg.val_fraction)
    spec = fit_spec(frame[frame["window_start"] < val_start_ns], settings.forecast.horizons,
                    settings.forecast.quantiles, cfg.encoder_length, cfg.vol_window, cfg.inputs)
    prepared = prepare(frame, spec)
    val_start_idx = val_start_ns // spec.width_ns
    history: list[dict[str, float | None]] = []
    ckpt_dir = cfg.checkpoint_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    with quiet_library_warnings():
        pl.seed_everything(cfg.seed, verbose=False)
        train_ds, val_ds = build_datasets(prepared, spec, val_start_idx)
        model = build_network(train_ds, spec, cfg.net)
        monitor = "val_loss" if val_ds is not None else "train_loss"
        checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="tft-{epoch}", monitor=monitor, mode="min",
                                     save_top_k=1)
        best_weights: dict[str, Any] = {}
        callbacks = [checkpoint, *_callbacks(spec, history, best_weights)]
        if val_ds is not None:
            callbacks.append(EarlyStopping(monitor="val_loss", patience=cfg.patience, mode="min"))
        trainer = pl.Trainer(
            max_epochs=cfg.max_epochs, accelerator=cfg.accelerator, devices=1, gradient_clip_val=cfg.gradient_clip,
            callbacks=callbacks, logger=False, enable_progress_bar=cfg.progress, enable_model_summary=False,
            max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
            limit_train_batches=cfg.limit_train_batches, limit_val_batches=cfg.limit_val_batches,
            default_root_dir=ckpt_dir, num_sanity_val_steps=0,
        )
        train_dl = train_ds.to_dataloader(train=True, batch_size=cfg.batch_size, num_workers=0)
        val_dl = val_ds.to_dataloader(train=False, batch_size=cfg.batch_size * 4, num_workers=0) if val_ds else None
        trainer.fit(model, train_dl, val_dl)
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
        if best_weights:  # the best epoch's weights as they went into its checkpoint; the file is never unpickled
            model.load_state_dict(best_weights)
        model.trainer = None  # as a model loaded afresh: no trainer (and its data loaders) kept alive
    model.cpu().eval()
    model.ccf_spec = spec.to_dict()
    return Fitted(model, spec, prepared, val_start_idx, history, best, fingerprint(frame))


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[Any, FeatureSpec]:
    """A TFT and its spec from a checkpoint written by :func:`fit`, for resuming or looking into a run by hand: full
    unpickling, so only for files you wrote yourself (:func:`fit` and the registry never call it)."""
    import torch
    from pytorch_forecasting import TemporalFusionTransformer  # type: ignore[import-untyped]

    from models.network import quiet_library_warnings

    spec = FeatureSpec.from_dict(torch.load(path, map_location=device, weights_only=False)["ccf_spec"])
    with quiet_library_warnings():
        model = TemporalFusionTransformer.load_from_checkpoint(path, map_location=device, weights_only=False)
    model.eval()
    model.ccf_spec = spec.to_dict()
    return model, spec


@dataclass
class WindowForecast:
    """A model's forecasts at every anchor of a window."""

    predictions: list[Any]
    anchors: dict[str, set[int]]  # venue:SYMBOL -> issue times
    groups: np.ndarray  # venue:SYMBOL of each anchor
    issued_at: np.ndarray
    q: np.ndarray  # (n, horizons, quantiles)
    realised: np.ndarray  # (n, horizons), NaN where unknown


def forecast_window(model: Any, spec: FeatureSpec, frame: pd.DataFrame, start_idx: int, version: str,
                    keep: Sequence[float], name: str = "tft") -> WindowForecast:
    """The model's predictions at every anchor whose window starts at ``start_idx`` or later."""
    prepared = prepare(frame, spec)
    a = anchors(prepared, spec, min_time_idx=start_idx)
    q = forecast_anchors(model, spec, Layout.of(model, spec), a)
    groups = a.frame["group"].to_numpy()[a.positions]
    issued = a.frame["window_end"].to_numpy()[a.positions]
    by_group: dict[str, set[int]] = {}
    for g, t in zip(groups.tolist(), issued.tolist(), strict=True):
        by_group.setdefault(g, set()).add(int(t))
    preds = tft_predictions(spec, groups.tolist(), issued, q, version, keep, name)
    return WindowForecast(preds, by_group, groups, issued, q, realised_returns(a, spec))


def validate(fitted: Fitted, frame: pd.DataFrame, settings: Settings, models: Sequence[str],
             champion: Any | None = None) -> tuple[ScoreTable, dict[str, dict[int, list[float]]]]:
    """Score the validation window: TFT, baselines (online over the whole frame) and the champion if comparable;
    also every model's quantile calibration there."""
    keep = settings.forecast.quantiles
    wf = forecast_window(fitted.model, fitted.spec, frame, fitted.val_start_idx, "candidate", keep)
    rows = frame_to_rows(frame)
    preds = wf.predictions + baseline_predictions(rows, settings, models)
    if champion is not None and champion.spec.feature_set == fitted.spec.feature_set:
        preds += forecast_window(champion.model, champion.spec, frame, fitted.val_start_idx, champion.version,
                                 keep, "champion").predictions
    calib = quantile_calibration(rows, preds, settings.forecast.quantiles, wf.anchors)
    return score(rows, preds, wf.anchors), calib


def code_version() -> str:
    """``git`` revision of this checkout (``+dirty`` with local changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def train(frame: pd.DataFrame, settings: Settings, cfg: TrainConfig, models: Sequence[str] | None = None,
          client: Any | None = None) -> TrainResult:
    """Fit, score the validation window, log and register in MLflow, and gate the ``champion`` alias."""
    from models import registry
    from models.mlflow_log import log_run

    models = list(settings.forecast.models if models is None else models)
    if "naive" not in models:
        models.insert(0, "naive")
    client = client or registry.open_client(settings)
    exp_id = registry.experiment_id(client, settings)
    try:
        champion = registry.load_champion(client, settings)
    except registry.UntrustedModelError as exc:  # never loaded; the candidate is then judged against naive only
        logger.error("the current champion is not ours, not comparing with it: %s", exc)
        champion = None
    t0 = time.perf_counter()
    fitted = fit(frame, settings, cfg)
    t1 = time.perf_counter()
    scores, calib = validate(fitted, frame, settings, models, champion)
    logger.info("fitted in %.1f s (%d epochs), validation window scored in %.1f s", t1 - t0, len(fitted.history),
                time.perf_counter() - t1)
    champ_scores = scores.get("champion") if champion is not None else None
    decision = gate(scores.get("tft", {}), champ_scores, cfg.min_gain)
    run_id = log_run(client, exp_id, fitted, frame, scores, decision, cfg, code_version(), calib,
                     settings.forecast.quantiles)
    example, out_example = io_example(fitted, frame, settings)
    version = registry.register(client, settings, run_id, fitted.model, fitted.spec, example, out_example)
    client.set_tag(run_id, "ccf.version", version)
    promote_if(client, settings, version, decision)
    client.set_terminated(run_id)
    return TrainResult(fitted, scores, decision, run_id, version)


def promote_if(client: Any, settings: Settings, version: str, decision: GateDecision) -> bool:
    """Move the ``champion`` alias to ``version`` when the gate said so; the decision is tagged on the version."""
    from models import registry

    name = settings.mlflow.model_name
    client.set_model_version_tag(name, version, "ccf.gate", "promote" if decision.promote else "refuse")
    client.set_model_version_tag(name, version, "ccf.gate_reason", decision.reason)
    if decision.promote:
        registry.set_alias(client, name, version)
    logger.info("%s version %s: %s (%s)", name, version, "promoted" if decision.promote else "not promoted",
                decision.reason)
    return decision.promote


def io_example(fitted: Fitted, frame: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """An input example (the last full window of one symbol's feature rows) and what the predictor makes of it."""
    from ccf.store.tables import prediction_values
    from models.predict import Predictor
    from models.registry import LoadedModel

    g = frame[(frame["venue"] == frame["venue"].iloc[-1]) & (frame["symbol"] == frame["symbol"].iloc[-1])]
    example = g.iloc[-fitted.spec.history:].reset_index(drop=True)
    loaded = LoadedModel(settings.mlflow.model_name, "candidate", "", fitted.model, fitted.spec)
    preds = Predictor(loaded, quantiles=settings.forecast.quantiles).on_rows(frame_to_rows(example))
    out = pd.DataFrame([prediction_values(p, settings.forecast.quantiles) for p in preds]) if preds else None
    return example, out
