"""Trade flow over a window: count, volume, notional, VWAP, buy volume, signed volume, buy ratio.

>>> tf = TradeFlow()
>>> _ = tf.update(100.0, 1.0, "buy").update(102.0, 3.0, "sell")
>>> f = tf.get()
>>> f["trade_count"], f["volume"], f["notional"], f["vwap"], f["buy_volume"], f["signed_volume"], f["buy_ratio"]
(2.0, 4.0, 406.0, 101.5, 1.0, -2.0, 0.25)
>>> TradeFlow().get()["vwap"]  # no trades: VWAP is undefined
nan
"""

from __future__ import annotations

import math

TRADE_FEATURES = ("trade_count", "volume", "notional", "vwap", "buy_volume", "signed_volume", "buy_ratio")


class TradeFlow:
    """Sums over the trades of one window (taker side decides buy/sell)."""

    __slots__ = ("buy_volume", "count", "notional", "volume")

    def __init__(self) -> None:
        self.count = 0
        self.volume = 0.0
        self.notional = 0.0
        self.buy_volume = 0.0

    def update(self, price: float, size: float, side: str) -> TradeFlow:
        self.count += 1
        self.volume += size
        self.notional += price * size
        if side == "buy":
            self.buy_volume += size
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
        }

    def __getstate__(self) -> tuple[int, float, float, float]:
        return (self.count, self.volume, self.notional, self.buy_volume)

    def __setstate__(self, state: tuple[int, float, float, float]) -> None:
        self.count, self.volume, self.notional, self.buy_volume = state
