"""Trade flow over a window: count, volume, notional, VWAP, buy volume, signed volume, buy ratio, trade-flow imbalance.

Trade-flow imbalance is ``(buy - sell) / (buy + sell)`` in ``[-1, 1]``, by volume (``tfi_volume``) and by count
(``tfi_count``); 0 in a window without trades (no flow either way).

>>> tf = TradeFlow()
>>> _ = tf.update(100.0, 1.0, "buy").update(102.0, 3.0, "sell")
>>> f = tf.get()
>>> f["trade_count"], f["volume"], f["notional"], f["vwap"], f["buy_volume"], f["signed_volume"], f["buy_ratio"]
(2.0, 4.0, 406.0, 101.5, 1.0, -2.0, 0.25)
>>> f["tfi_volume"], f["tfi_count"]
(-0.5, 0.0)
>>> TradeFlow().get()["vwap"]  # no trades: VWAP is undefined
nan
"""

from __future__ import annotations

import math

TRADE_FEATURES = ("trade_count", "volume", "notional", "vwap", "buy_volume", "signed_volume", "buy_ratio")
TRADE_IMBALANCE = ("tfi_volume", "tfi_count")
"""Also in :meth:`TradeFlow.get`; listed apart because these columns came later (they go last in a row)."""


class TradeFlow:
    """Sums over the trades of one window (taker side decides buy/sell)."""

    __slots__ = ("buy_count", "buy_volume", "count", "notional", "volume")

    def __init__(self) -> None:
        self.count = 0
        self.buy_count = 0
        self.volume = 0.0
        self.notional = 0.0
        self.buy_volume = 0.0

    def update(self, price: float, size: float, side: str) -> TradeFlow:
        self.count += 1
        self.volume += size
        self.notional += price * size
        if side == "buy":
            self.buy_volume += size
            self.buy_count += 1
        return self

    def get(self) -> dict[str, float]:
        vol = self.volume
        return {
            "trade_count": float(self.count),
            "volume": vol,
            "notional": self.notional,
            "vwap": self.notional / vol if vol > 0 else math.nan,
            "buy_volume": self.buy_volume,
            "signed_volume": 2.0 * self.buy_volume - vol,
            "buy_ratio": self.buy_volume / vol if vol > 0 else math.nan,
            "tfi_volume": (2.0 * self.buy_volume - vol) / vol if vol > 0 else 0.0,
            "tfi_count": (2.0 * self.buy_count - self.count) / self.count if self.count else 0.0,
        }

    def __getstate__(self) -> tuple[int, float, float, float, int]:
        return (self.count, self.volume, self.notional, self.buy_volume, self.buy_count)

    def __setstate__(self, state: tuple[int, float, float, float] | tuple[int, float, float, float, int]) -> None:
        self.count, self.volume, self.notional, self.buy_volume = state[:4]
        self.buy_count = state[4] if len(state) > 4 else 0  # a snapshot from before buy counts: its window counts none
