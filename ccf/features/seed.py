"""The ``seed.v1`` feature set: the original CCF's book features, beside every ``book.v1`` column.

Selected by ``CCF_FEATURES__FEATURE_SET=seed`` (windows 3 s unless ``CCF_FEATURES__WINDOW_S`` says otherwise). Per
window, from the book at its end (the ``book.v1`` rule) and the book at the previous window's end, for the best
:data:`SEED_LEVELS` levels ``i`` of each side ``s`` (``bid``, ``ask``):

- ``lr_{s}_price_{i}``, ``lr_{s}_size_{i}``, ``lr_{s}_value_{i}``: log-ratio ``log(x / x_prev)`` of the level's
  price, size and value (price × size) against the previous window; ``lr_{s}_price_sum``, ``..._size_sum``,
  ``..._value_sum``: the same of the side's totals over the levels. NaN in the first window, after a book that was not
  whole, or where a level is missing.
- ``rel_{s}_price_{i}``: ``(price - mid) / mid`` in basis points; ``rel_{s}_size_{i}``: the level's share of the
  side's size over the levels.
- ``vwap_buy_{q}`` / ``vwap_sell_{q}``: the average price paid to buy (got to sell) ``q`` units walking the asks
  (bids) from the touch, for each configured ``q``; NaN when the levels kept do not hold ``q``.
- ``mid_ema_{n}``: exponential moving average of the window mids, ``alpha = 2 / (n + 1)``, from the first mid.

>>> bids, asks = [(99.0, 2.0), (98.0, 2.0)], [(101.0, 1.0), (102.0, 3.0)]
>>> vwap(asks, 2.0), vwap(bids, 3.0), vwap(asks, 5.0)
(101.5, 98.66666666666667, nan)
>>> s = SeedFeatures(quantities=(2.0,), spans=(3,), levels=2)
>>> row = {"mid": 100.0}
>>> s.close(row, bids, asks)
>>> row["rel_bid_price_1"], row["rel_ask_size_2"], row["vwap_buy_2"], math.isnan(row["lr_bid_size_1"])
(-100.0, 0.75, 101.5, True)
>>> row = {"mid": 101.0}
>>> s.close(row, [(99.0, 4.0), (98.0, 2.0)], asks)
>>> round(row["lr_bid_size_1"], 6), round(row["lr_bid_size_sum"], 6), row["lr_ask_price_1"], row["mid_ema_3"]
(0.693147, 0.405465, 0.0, 100.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ccf.schemas import Level

NAN = math.nan
SEED_SET = "seed.v1"
SEED_LEVELS = 5
SEED_VWAP_DEPTH = 200
"""Levels per side the seed set keeps of each window's end book (VWAP walks these)."""
VWAP_QUANTITIES = (1.0, 10.0, 50.0)
EMA_SPANS = (5, 10, 20)
_SIDES = ("bid", "ask")
_PARTS = ("price", "size", "value")


def _q_name(q: float) -> str:
    """``1.0`` → ``1``, ``0.5`` → ``0_5`` (column-name safe)."""
    return f"{q:g}".replace(".", "_").replace("-", "m")


def seed_feature_names(
    quantities: Sequence[float] = VWAP_QUANTITIES, spans: Sequence[int] = EMA_SPANS, levels: int = SEED_LEVELS
) -> list[str]:
    """Columns the seed set adds to a ``book.v1`` row, in order.

    >>> seed_feature_names((1.0,), (5,), 1)[:4], len(seed_feature_names())
    (['lr_bid_price_1', 'lr_bid_size_1', 'lr_bid_value_1', 'lr_ask_price_1'], 65)
    """
    names = [f"lr_{s}_{p}_{i}" for i in range(1, levels + 1) for s in _SIDES for p in _PARTS]
    names += [f"lr_{s}_{p}_sum" for s in _SIDES for p in _PARTS]
    names += [f"rel_{s}_{p}_{i}" for i in range(1, levels + 1) for s in _SIDES for p in ("price", "size")]
    names += [f"vwap_{d}_{_q_name(q)}" for q in quantities for d in ("buy", "sell")]
    names += [f"mid_ema_{n}" for n in spans]
    return names


def vwap(levels: Sequence[Level], quantity: float) -> float:
    """Average price of ``quantity`` units taken from ``levels`` (best first); NaN if they hold less."""
    left, cost = quantity, 0.0
    for p, s in levels:
        take = s if s < left else left
        cost += take * p
        left -= take
        if left <= 0:
            return cost / quantity
    return NAN


def _log_ratio(x: float, prev: float) -> float:
    return math.log(x / prev) if x > 0 and prev > 0 else NAN


class SeedFeatures:
    """The seed columns of successive windows: keeps the last window's levels and the mid EMAs."""

    __slots__ = ("alphas", "emas", "levels", "prev", "quantities", "spans")

    def __init__(
        self, quantities: Sequence[float] = VWAP_QUANTITIES, spans: Sequence[int] = EMA_SPANS, levels: int = SEED_LEVELS
    ) -> None:
        self.quantities = tuple(quantities)
        self.spans = tuple(spans)
        self.levels = levels
        self.alphas = [2.0 / (n + 1) for n in self.spans]
        self.emas = [NAN] * len(self.spans)
        self.prev: list[float] | None = None  # price, size, value per level and side, then the side totals

    def forget(self) -> SeedFeatures:
        """The previous window is not the one before the next (windows restarted): no log-ratios for it."""
        self.prev = None
        return self

    def _vector(self, bids: Sequence[Level], asks: Sequence[Level]) -> list[float]:
        out: list[float] = []
        totals: list[float] = []
        n = self.levels
        for i in range(n):
            for side in (bids, asks):
                p, s = side[i] if i < len(side) else (NAN, NAN)
                out += [p, s, p * s]
        for k in range(2):  # side totals over the levels: price, size, value
            side = (bids, asks)[k][:n]
            totals += [sum(p for p, _ in side), sum(s for _, s in side), sum(p * s for p, s in side)]
        return out + totals

    def close(self, row: dict[str, float], bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """Add the seed columns of a window to ``row`` (which has ``mid``); ``bids``/``asks``: its end book, best
        first, as deep as VWAP needs (empty if the book was not whole)."""
        n = self.levels
        whole = bool(bids and asks)
        cur = self._vector(bids, asks) if whole else None
        names = seed_feature_names((), (), n)
        prev = self.prev
        for j, name in enumerate(names[: 6 * n + 6]):
            row[name] = _log_ratio(cur[j], prev[j]) if cur is not None and prev is not None else NAN
        self.prev = cur
        mid = row["mid"]
        k = 6 * n + 6
        for i in range(n):
            for side in (bids, asks):
                if i < len(side) and mid > 0:
                    p, s = side[i]
                    total = sum(q for _, q in side[:n])
                    row[names[k]], row[names[k + 1]] = (p - mid) / mid * 1e4, s / total
                else:
                    row[names[k]] = row[names[k + 1]] = NAN
                k += 2
        for q in self.quantities:
            name = _q_name(q)
            row[f"vwap_buy_{name}"] = vwap(asks, q) if whole else NAN
            row[f"vwap_sell_{name}"] = vwap(bids, q) if whole else NAN
        for j, (span, alpha) in enumerate(zip(self.spans, self.alphas, strict=True)):
            ema = self.emas[j]
            if mid == mid:
                ema = mid if ema != ema else ema + alpha * (mid - ema)
                self.emas[j] = ema
            row[f"mid_ema_{span}"] = ema
