"""Scoring a window for the TFT, naive and the River baselines with the one shared scorer, and the promotion gate.

Every model's predictions go through :class:`ccf.forecast.scoring.Scorer` (the same object the features flow uses):
per symbol, rows are replayed in time order, each row's mid is observed, then the predictions issued at that row's
end are added, so each is scored as soon as its target window closes. Only anchors where the TFT forecast are
scored for every model, so all models are judged on the same targets.

The gate: a candidate is promoted when its mean skill over the horizons (``1 - SSE / SSE(naive)`` on the same
targets, :attr:`Metrics.skill`) is above ``min_gain`` (it beats naive) and above the current champion's mean skill
on the same window plus ``min_gain``.

>>> better, worse = Metrics(n=1, sq_sum=0.5, naive_sq_sum=1.0), Metrics(n=1, sq_sum=0.9, naive_sq_sum=1.0)
>>> gate({1: better}, {1: worse}).promote, gate({1: worse}, {1: better}).promote
(True, False)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ccf.forecast.baselines import SymbolForecaster
from ccf.forecast.scoring import Metrics, Scorer
from ccf.schemas import FeatureRow, Prediction, feature
from ccf.settings import Settings
from models.dataset import FeatureSpec

ScoreTable = dict[str, dict[int, Metrics]]
"""model → horizon → metrics (summed over symbols)."""


def merge(metrics: Iterable[Metrics]) -> Metrics:
    out = Metrics()
    for m in metrics:
        for f in dataclasses.fields(Metrics):
            setattr(out, f.name, getattr(out, f.name) + getattr(m, f.name))
    return out


def tft_predictions(
    spec: FeatureSpec,
    groups: Sequence[str],
    issued_at: np.ndarray,
    q: np.ndarray,
    version: str,
    quantiles: Sequence[float] | None = None,
    model: str = "tft",
) -> list[Prediction]:
    """Predictions from ``(n, horizons, spec.quantiles)`` forecasts; ``quantiles`` (default: the spec's) are kept."""
    keep = [(str(qq), spec.quantiles.index(qq)) for qq in (quantiles or spec.quantiles) if qq in spec.quantiles]
    mid_i = spec.quantiles.index(0.5)
    width_s = spec.width_ns / 1e9
    out = []
    for i, (g, t) in enumerate(zip(groups, issued_at.tolist(), strict=True)):
        venue, _, symbol = g.partition(":")
        for j, h in enumerate(spec.horizons):
            row = q[i, j]
            out.append(Prediction(
                model=model, model_version=version, venue=venue, symbol=symbol, horizon_steps=h,
                horizon_s=h * width_s, issued_at=t, target_time=t + h * spec.width_ns, value=float(row[mid_i]),
                quantiles={k: float(row[c]) for k, c in keep},
            ))
    return out


def baseline_predictions(rows: Iterable[FeatureRow], settings: Settings, models: Sequence[str]) -> list[Prediction]:
    """The online baselines over ``rows`` (in time order per symbol), learning as they go; every prediction."""
    fc = settings.forecast
    engines: dict[tuple[str, str], SymbolForecaster] = {}
    out: list[Prediction] = []
    for r in rows:
        f = engines.get((r.venue, r.symbol))
        if f is None:
            width_s = (r.window_end - r.window_start) / 1e9
            f = engines[(r.venue, r.symbol)] = SymbolForecaster(
                r.venue, r.symbol, horizons=fc.horizons, models=models, quantiles=fc.quantiles, window_s=width_s,
                ewma_alpha=fc.ewma_alpha)
        out.extend(f.on_row(r))
    return out


def score(
    rows: Sequence[FeatureRow],
    predictions: Iterable[Prediction],
    anchors: Mapping[str, set[int]] | None = None,
) -> ScoreTable:
    """Score ``predictions`` against the mids of ``rows`` with the shared :class:`Scorer`, one per symbol.

    ``anchors`` (``venue:SYMBOL`` → issue times), when given, keeps only predictions issued there.
    """
    by_issue: dict[tuple[str, int], list[Prediction]] = {}
    for p in predictions:
        g = f"{p.venue}:{p.symbol}"
        if anchors is not None and p.issued_at not in anchors.get(g, ()):
            continue
        by_issue.setdefault((g, p.issued_at), []).append(p)
    scorers: dict[str, Scorer] = {}
    for r in rows:
        g = f"{r.venue}:{r.symbol}"
        s = scorers.get(g)
        if s is None:
            s = scorers[g] = Scorer(r.venue, r.symbol)
        mid = feature(r, "mid")
        s.observe_mid(r.window_end, mid if r.book_valid else math.nan)
        for p in by_issue.get((g, r.window_end), ()):
            s.add_prediction(p)
    table: ScoreTable = {}
    parts: dict[tuple[str, int], list[Metrics]] = {}
    for s in scorers.values():
        for key, m in s.metrics.items():
            parts.setdefault(key, []).append(m)
    for (model, h), ms in sorted(parts.items()):
        table.setdefault(model, {})[h] = merge(ms)
    return table


def mean_skill(table: Mapping[int, Metrics]) -> float | None:
    skills = [m.skill for m in table.values()]
    if not skills or any(s is None for s in skills):
        return None
    return float(np.mean([s for s in skills if s is not None]))


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    candidate: float | None
    champion: float | None


def gate(candidate: Mapping[int, Metrics], champion: Mapping[int, Metrics] | None, min_gain: float = 0.0) -> GateDecision:
    """Promote ``candidate`` only if it beats naive and the champion (scores on the same window; see the module)."""
    cand = mean_skill(candidate)
    champ = mean_skill(champion) if champion is not None else None
    if cand is None:
        return GateDecision(False, "the candidate has no scored forecast at some horizon", cand, champ)
    if cand <= min_gain:
        return GateDecision(False, f"does not beat naive: mean skill {cand:+.5f} <= {min_gain:+.5f}", cand, champ)
    if champion is not None and champ is not None and cand <= champ + min_gain:
        return GateDecision(False, f"does not beat the champion: mean skill {cand:+.5f} <= {champ:+.5f}", cand, champ)
    vs = "no comparable champion" if champ is None else f"champion {champ:+.5f}"
    return GateDecision(True, f"mean skill {cand:+.5f} beats naive (0) and {vs}", cand, champ)


def quantile_calibration(
    rows: Sequence[FeatureRow],
    predictions: Iterable[Prediction],
    quantiles: Sequence[float],
    anchors: Mapping[str, set[int]] | None = None,
) -> dict[str, dict[int, list[float]]]:
    """model → horizon → for each of ``quantiles``, the share of realised returns at or below the forecast quantile
    (ideal: the quantile itself); NaN where a model gave no such quantile."""
    mids = {(f"{r.venue}:{r.symbol}", r.window_end): feature(r, "mid") for r in rows if r.book_valid}
    keys = [str(q) for q in quantiles]
    hits: dict[tuple[str, int], np.ndarray] = {}
    counts: dict[tuple[str, int], np.ndarray] = {}
    for p in predictions:
        g = f"{p.venue}:{p.symbol}"
        if anchors is not None and p.issued_at not in anchors.get(g, ()):
            continue
        m0, m1 = mids.get((g, p.issued_at), math.nan), mids.get((g, p.target_time), math.nan)
        if not (m0 > 0 and m1 > 0) or not p.quantiles:
            continue
        y = math.log(m1 / m0)
        k = (p.model, p.horizon_steps)
        if k not in hits:
            hits[k], counts[k] = np.zeros(len(keys)), np.zeros(len(keys))
        for i, key in enumerate(keys):
            v = p.quantiles.get(key)
            if v is not None:
                counts[k][i] += 1
                hits[k][i] += y <= v
    out: dict[str, dict[int, list[float]]] = {}
    for (model, h), c in sorted(counts.items()):
        with np.errstate(invalid="ignore", divide="ignore"):
            out.setdefault(model, {})[h] = (hits[(model, h)] / c).tolist()
    return out


def table_rows(table: ScoreTable) -> list[dict[str, float | int | str | None]]:
    """Flat rows (model, horizon, n, mae, rmse, hit_rate, pinball, coverage, skill) for reports and MLflow."""
    out: list[dict[str, float | int | str | None]] = []
    for model, hs in sorted(table.items()):
        for h, m in sorted(hs.items()):
            out.append({"model": model, "horizon": h, "n": m.n, "mae": m.mae, "rmse": m.rmse, "hit_rate": m.hit_rate,
                        "pinball": m.pinball, "coverage": m.coverage, "skill": m.skill})
    return out
