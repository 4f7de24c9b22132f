"""The one scorer: every model's predictions, the TFT's included, judged the same way against what happened.

A prediction made at ``issued_at`` (a window end) for ``target_time`` is scored when the realised mid at
``target_time`` is known: ``y = log(mid[target_time] / mid[issued_at])``. Per model and horizon it keeps:

- MAE and RMSE of the point forecast;
- direction hit-rate over targets that moved (``y != 0``) where the model called a direction (``value != 0``);
- pinball loss averaged over the quantiles, and coverage of the outer quantile band, where quantiles exist;
- skill vs naive: ``1 - SSE(model) / SSE(naive)`` over the *same* targets, where naive forecasts zero return.

>>> m = Metrics()
>>> m.update(0.001, 0.002, {"0.1": -0.001, "0.9": 0.003})
>>> m.update(-0.001, -0.0005, {})
>>> m.n, round(m.mae, 6), round(m.skill, 6), m.hit_rate, m.coverage
(2, 0.00075, 0.375, 1.0, 1.0)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from ccf.schemas import Prediction, Score


def pinball(y: float, q: float, pred: float) -> float:
    """Pinball (quantile) loss of ``pred`` as the ``q``-quantile of ``y``.

    >>> pinball(1.0, 0.9, 0.0), pinball(0.0, 0.9, 1.0)
    (0.9, 0.09999999999999998)
    """
    d = y - pred
    return q * d if d >= 0 else (q - 1.0) * d


_LEVELS: dict[tuple[str, ...], tuple[tuple[str, float], ...]] = {}
"""The quantile keys of a prediction, in level order, per key tuple seen (predictions share a handful of them)."""


def _levels(keys: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(((k, float(k)) for k in keys), key=lambda kq: kq[1]))


@dataclass
class Metrics:
    """Running sums for one (model, horizon, symbol)."""

    n: int = 0
    abs_sum: float = 0.0
    sq_sum: float = 0.0
    naive_sq_sum: float = 0.0
    hits: int = 0
    calls: int = 0
    pinball_sum: float = 0.0
    pinball_n: int = 0
    covered: int = 0
    cover_n: int = 0

    def update(self, y: float, value: float, quantiles: dict[str, float]) -> None:
        err = value - y
        self.n += 1
        self.abs_sum += abs(err)
        self.sq_sum += err * err
        self.naive_sq_sum += y * y
        if y != 0.0 and value != 0.0:
            self.calls += 1
            self.hits += (y > 0) == (value > 0)
        if quantiles:
            keys = tuple(quantiles)
            levels = _LEVELS.get(keys)
            if levels is None:
                levels = _LEVELS[keys] = _levels(keys)
            total = 0.0
            for k, q in levels:
                d = y - quantiles[k]
                total += q * d if d >= 0 else (q - 1.0) * d
            self.pinball_sum += total / len(levels)
            self.pinball_n += 1
            if len(levels) >= 2:
                self.cover_n += 1
                self.covered += quantiles[levels[0][0]] <= y <= quantiles[levels[-1][0]]

    @property
    def mae(self) -> float:
        return self.abs_sum / self.n if self.n else math.nan

    @property
    def rmse(self) -> float:
        return math.sqrt(self.sq_sum / self.n) if self.n else math.nan

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.calls if self.calls else None

    @property
    def pinball(self) -> float | None:
        return self.pinball_sum / self.pinball_n if self.pinball_n else None

    @property
    def coverage(self) -> float | None:
        return self.covered / self.cover_n if self.cover_n else None

    @property
    def skill(self) -> float | None:
        return 1.0 - self.sq_sum / self.naive_sq_sum if self.naive_sq_sum > 0 else None


class Scorer:
    """Joins predictions with realised mids for one ``venue:symbol``.

    Mids are remembered for ``keep`` windows, so predictions that arrive late (the TFT sidecar through Kafka) still
    find the mid they were issued at. Predictions whose target is past and whose mids are gone are counted as
    ``expired``.
    """

    def __init__(self, venue: str, symbol: str, keep: int = 4096) -> None:
        self.venue = venue
        self.symbol = symbol
        self.keep = keep
        self.mids: OrderedDict[int, float] = OrderedDict()
        self.pending: dict[int, list[Prediction]] = {}
        self.metrics: dict[tuple[str, int], Metrics] = {}
        self.expired = 0

    def add_prediction(self, p: Prediction) -> None:
        if p.target_time in self.mids:
            self._score(p)
        else:
            self.pending.setdefault(p.target_time, []).append(p)

    def observe_mid(self, window_end: int, mid: float) -> None:
        """The mid at a window end (NaN when the book was not valid). Scores predictions due now."""
        self.mids[window_end] = mid
        while len(self.mids) > self.keep:
            self.mids.popitem(last=False)
        for p in self.pending.pop(window_end, ()):
            self._score(p)
        if self.pending and len(self.pending) > self.keep:
            oldest = next(iter(self.mids))
            for t in [t for t in self.pending if t < oldest]:
                self.expired += len(self.pending.pop(t))

    def _score(self, p: Prediction) -> None:
        start = self.mids.get(p.issued_at, math.nan)
        end = self.mids[p.target_time]
        if not (start > 0 and end > 0):  # an invalid book at either end: nothing true to compare with
            return
        y = math.log(end / start)
        key = (p.model, p.horizon_steps)
        m = self.metrics.get(key)
        if m is None:
            m = self.metrics[key] = Metrics()
        m.update(y, p.value, p.quantiles)

    def scores(self, window_end: int) -> list[Score]:
        """A :class:`Score` per (model, horizon) as of ``window_end``, in a stable order."""
        out = []
        for (model, h), m in sorted(self.metrics.items()):
            out.append(
                Score(
                    model=model,
                    horizon_steps=h,
                    venue=self.venue,
                    symbol=self.symbol,
                    window_end=window_end,
                    n=m.n,
                    mae=m.mae,
                    rmse=m.rmse,
                    hit_rate=m.hit_rate,
                    pinball=m.pinball,
                    coverage=m.coverage,
                    skill=m.skill,
                )
            )
        return out
