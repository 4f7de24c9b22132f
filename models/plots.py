"""Figures for MLflow and the walk-forward report (matplotlib's object API: no pyplot, no global backend state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from models.evaluate import ScoreTable, table_rows

BPS = 1e4


def _figure(w: float = 8.0, h: float = 4.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=90, layout="constrained")


def loss_figure(history: Sequence[Mapping[str, float | None]]) -> Any:
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    epochs = [int(e["epoch"] or 0) for e in history]
    for key in ("train_loss", "val_loss"):
        ys = [e.get(key) for e in history]
        if any(y is not None for y in ys):
            ax.plot(epochs, [np.nan if y is None else y for y in ys], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("quantile loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def skill_figure(table: ScoreTable, title: str = "skill vs naive per horizon") -> Any:
    """Grouped bars: ``1 - SSE/SSE(naive)`` per model and horizon (:func:`ccf.report.skill_figure`)."""
    from ccf.report import skill_figure as bars

    return bars(table_rows(table), title)


def bands_figure(issued_at: np.ndarray, realised: np.ndarray, q: np.ndarray, quantiles: Sequence[float], h: int,
                 width_s: float) -> Any:
    """Forecast median and outer quantile band of the ``h``-step return vs what was realised, in bps."""
    fig = _figure(9, 3.5)
    ax = fig.add_subplot()
    t = [datetime.fromtimestamp(x / 1e9, tz=UTC) for x in issued_at.tolist()]
    lo, mid, hi = 0, quantiles.index(0.5), len(quantiles) - 1
    ax.fill_between(t, q[:, lo] * BPS, q[:, hi] * BPS, alpha=0.3, label=f"TFT {quantiles[lo]:g}–{quantiles[hi]:g} band")
    ax.plot(t, realised * BPS, color="black", lw=0.7, label="realised")
    ax.plot(t, q[:, mid] * BPS, color="tab:red", lw=0.9, label="TFT median")
    ax.set_ylabel(f"{h}-step log-return (bps)")
    ax.set_title(f"h = {h} ({h * width_s:g} s ahead), by issue time (UTC)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return fig


def calibration_figure(nominal: Sequence[float], observed: Mapping[str, Mapping[int, Sequence[float]]]) -> Any:
    """Reliability per horizon: share of realised returns at or below each forecast quantile, per model (ideal: the
    diagonal)."""
    horizons = sorted({h for hs in observed.values() for h in hs})
    fig = _figure(3.2 * max(len(horizons), 1), 3.4)
    for i, h in enumerate(horizons):
        ax = fig.add_subplot(1, max(len(horizons), 1), i + 1)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for model, hs in sorted(observed.items()):
            if h in hs:
                ax.plot(nominal, hs[h], marker="o", ms=3, label=model)
        ax.set_title(f"h = {h}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("nominal quantile")
        if i == 0:
            ax.set_ylabel("observed P(y ≤ q)")
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return fig


def coverage_figure(table: ScoreTable, target: float) -> Any:
    """Coverage of each model's outer band per horizon (:func:`ccf.report.coverage_figure`)."""
    from ccf.report import coverage_figure as lines

    return lines(table_rows(table), target)
