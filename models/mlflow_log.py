"""One MLflow run per training: params, per-epoch losses, validation scores of every model, tags, plots."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.evaluate import GateDecision, ScoreTable
from models.plots import calibration_figure, coverage_figure, loss_figure, skill_figure
from models.registry import ARTIFACT_TAG, ARTIFACT_VALUE

_METRICS = ("mae", "rmse", "hit_rate", "pinball", "coverage", "skill")


def _params(fitted: Any, cfg: Any) -> dict[str, str]:
    spec = fitted.spec
    p: dict[str, Any] = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "net"}
    p.update({f"net_{k}": v for k, v in dataclasses.asdict(cfg.net).items()})
    p.update({"feature_set": spec.feature_set, "inputs": ",".join(spec.inputs), "horizons": list(spec.horizons),
              "quantiles": list(spec.quantiles), "window_s": spec.width_ns / 1e9, "groups": ",".join(spec.groups),
              "val_start_idx": fitted.val_start_idx, "rows": len(fitted.prepared)})
    return {k: str(v)[:6000] for k, v in p.items()}


def log_run(client: Any, exp_id: str, fitted: Any, frame: pd.DataFrame, scores: ScoreTable, decision: GateDecision,
            cfg: Any, code_version: str, calibration: dict[str, dict[int, list[float]]] | None = None,
            quantiles: Sequence[float] = ()) -> str:
    """Create the run and log everything about a fitted model; returns the run id (left open for registration)."""
    from mlflow.entities import Metric, Param

    spec = fitted.spec
    t0, t1 = int(frame["window_start"].min()), int(frame["window_end"].max())
    tags = {
        ARTIFACT_TAG: ARTIFACT_VALUE,
        "ccf.feature_set": spec.feature_set,
        "ccf.dataset_fingerprint": fitted.fingerprint,
        "ccf.code_version": code_version,
        "ccf.data_start_ns": str(t0),
        "ccf.data_end_ns": str(t1),
        "ccf.gate": "promote" if decision.promote else "refuse",
        "ccf.gate_reason": decision.reason,
    }
    run = client.create_run(exp_id, run_name=f"tft-{spec.feature_set}-{t1 // 10**9}", tags=tags)
    run_id = str(run.info.run_id)
    now = int(time.time() * 1000)
    params = _params(fitted, cfg)
    params["dataset_fingerprint"] = fitted.fingerprint
    params["code_version"] = code_version
    metrics = []
    for e in fitted.history:
        step = int(e["epoch"] or 0)
        for k in ("train_loss", "val_loss", "seconds"):
            v = e.get(k)
            if v is not None and math.isfinite(v):
                metrics.append(Metric("epoch_" + k if k == "seconds" else k, float(v), now, step))
    for model, hs in scores.items():
        for h, m in hs.items():
            for k in _METRICS:
                v = getattr(m, k)
                if v is not None and math.isfinite(v):
                    metrics.append(Metric(f"val_{model}_h{h}_{k}", float(v), now, 0))
            metrics.append(Metric(f"val_{model}_h{h}_n", float(m.n), now, 0))
    if decision.candidate is not None:
        metrics.append(Metric("val_tft_mean_skill", decision.candidate, now, 0))
    if fitted.epoch_seconds:
        metrics.append(Metric("mean_epoch_seconds", float(np.mean(fitted.epoch_seconds)), now, 0))
    plist = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(plist), 100):  # MLflow caps one batch at 100 params and 1000 metrics
        client.log_batch(run_id, params=plist[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    _log_plots(client, run_id, fitted, scores, calibration, quantiles)
    return run_id


def _log_plots(client: Any, run_id: str, fitted: Any, scores: ScoreTable,
               calibration: dict[str, dict[int, list[float]]] | None, quantiles: Sequence[float]) -> None:
    spec = fitted.spec
    if fitted.history:
        client.log_figure(run_id, loss_figure(fitted.history), "plots/loss.png")
    if scores:
        client.log_figure(run_id, skill_figure(scores, "validation skill vs naive"), "plots/skill.png")
        client.log_figure(run_id, coverage_figure(scores, max(spec.quantiles) - min(spec.quantiles)),
                          "plots/coverage.png")
    if calibration and quantiles:
        client.log_figure(run_id, calibration_figure(list(quantiles), calibration), "plots/calibration.png")
