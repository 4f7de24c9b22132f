"""Everything the features flow keeps for one ``venue:symbol``: book, windows, baselines, scorer.

Engine-agnostic and picklable: the Bytewax step that uses it is a few lines (``flows/features.py``), and
``ccf backtest`` and the tests drive the very same object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ccf.features.klines import KlineWindows
from ccf.features.windows import BookKeeper, SymbolWindows, WindowConfig
from ccf.forecast.baselines import MODELS, SymbolForecaster
from ccf.forecast.scoring import Scorer
from ccf.schemas import FeatureRow, NewsItem, Prediction, Score, feature
from ccf.settings import Settings


@dataclass(frozen=True)
class EngineConfig:
    window: WindowConfig = field(default_factory=WindowConfig)
    mode: str = "book"  # "book": order books and trades in; "kline": closed bars in, one window per bar
    horizons: tuple[int, ...] = (1, 5, 10, 20)
    models: tuple[str, ...] = MODELS
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    ewma_alpha: float = 0.1
    score_every: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        f, fc = settings.features, settings.forecast
        return cls(
            window=WindowConfig(
                width_ns=round(f.window_s * 1e9),
                lateness_ns=round(f.allowed_lateness_s * 1e9),
                levels=tuple(f.depth_levels),
                vol_windows=f.volatility_windows,
                seed=f.feature_set == "seed",
                vwap_quantities=tuple(f.vwap_quantities),
                ema_spans=tuple(f.ema_spans),
            ),
            mode=f.mode,
            horizons=tuple(fc.horizons),
            models=tuple(fc.models),
            quantiles=tuple(fc.quantiles),
            ewma_alpha=fc.ewma_alpha,
        )


@dataclass
class EngineOut:
    """What one batch of input produced for one symbol (one item downstream, not hundreds)."""

    rows: list[FeatureRow] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)
    late: list[Any] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    news: list[tuple[NewsItem, float]] = field(default_factory=list)
    """News items received (each once, before routing to symbols) with their sentiment: the ``news`` table."""
    made_at: float = 0.0
    """``time.monotonic()`` when the engine produced it (window-close -> sink latency is measured from here)."""

    def __bool__(self) -> bool:
        return bool(self.rows or self.predictions or self.scores or self.late or self.problems or self.news)


def problem_dict(problem: Any, venue: str, symbol: str, ts: int) -> dict[str, Any]:
    """A book problem (an exception or a status object) as a health/dead-letter record at event time ``ts``."""
    to_dict = getattr(problem, "to_dict", None)
    if callable(to_dict):
        d = dict(to_dict())
    else:
        d = {"error": type(problem).__name__, "reason": str(problem)}
    d.setdefault("ts", ts)
    d.setdefault("venue", venue)
    d.setdefault("symbol", symbol)
    return d


class SymbolEngine:
    """Book → windows → features → baselines → scores for one symbol."""

    def __init__(self, venue: str, symbol: str, book: BookKeeper, config: EngineConfig | None = None) -> None:
        self.cfg = config or EngineConfig()
        self.venue, self.symbol = venue, symbol
        self.windows: SymbolWindows | KlineWindows = (
            KlineWindows(venue, symbol, self.cfg.window.vol_windows)
            if self.cfg.mode == "kline"
            else SymbolWindows(venue, symbol, book, self.cfg.window)
        )
        self.forecaster = (
            SymbolForecaster(
                venue,
                symbol,
                horizons=self.cfg.horizons,
                models=self.cfg.models,
                quantiles=self.cfg.quantiles,
                window_s=self.cfg.window.width_ns / 1e9,
                ewma_alpha=self.cfg.ewma_alpha,
            )
            if self.cfg.models
            else None
        )
        self.scorer = Scorer(venue, symbol)
        self.rows_since_score = 0
        self.last_end: int | None = None

    def on_batch(self, records: Sequence[Any]) -> EngineOut:
        out = EngineOut()
        if any(type(r) is Prediction for r in records):
            # forecasts of other models (the TFT sidecar) join the same scorer; ours are scored where they are made
            own = set(self.cfg.models)
            for p in records:
                if type(p) is Prediction and p.model not in own:
                    self.scorer.add_prediction(p)
            records = [r for r in records if type(r) is not Prediction]
        rows, out.late = self.windows.process(records, self._problem_sink(out))
        self._rows(rows, out)
        out.made_at = time.monotonic()
        return out

    def on_eof(self) -> EngineOut:
        out = EngineOut()
        self._rows(self.windows.flush(), out)
        out.made_at = time.monotonic()
        if self.scorer.metrics and out.rows:
            out.scores.extend(self.scorer.scores(out.rows[-1].window_end))
        elif self.scorer.metrics and self.last_end is not None:
            out.scores.extend(self.scorer.scores(self.last_end))
            self.rows_since_score = 0
        return out

    def add_prediction(self, p: Prediction) -> None:
        """A prediction from outside this engine (the TFT sidecar), scored like the baselines."""
        self.scorer.add_prediction(p)

    def _problem_sink(self, out: EngineOut) -> Callable[[Any, int], None]:
        def sink(problem: Any, ts: int) -> None:
            out.problems.append(problem_dict(problem, self.venue, self.symbol, ts))

        return sink

    def _rows(self, rows: list[FeatureRow], out: EngineOut) -> None:
        for row in rows:
            out.rows.append(row)
            self.last_end = row.window_end
            mid = feature(row, "mid")
            self.scorer.observe_mid(row.window_end, mid if row.book_valid else float("nan"))
            if self.forecaster is not None:
                preds = self.forecaster.on_row(row)
                out.predictions.extend(preds)
                for p in preds:
                    self.scorer.add_prediction(p)
            self.rows_since_score += 1
            # scores at windows aligned to the clock (every score_every windows of event time), so a run that
            # starts at another time writes scores at the same window ends as a backtest
            aligned = (row.window_end // max(self.cfg.window.width_ns, 1)) % self.cfg.score_every == 0
            if aligned and self.scorer.metrics:
                out.scores.extend(self.scorer.scores(row.window_end))
                self.rows_since_score = 0
