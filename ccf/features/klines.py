"""Kline mode: one window per closed bar, so long real series (months of 1-minute bars) go through the same flow.

Features of a bar: its close (as ``mid``, so forecasts and scores work unchanged), log-return from the previous
close, range ``(high - low) / open``, volume, quote volume, trade count, taker-buy ratio and the realised volatility
of the last ``n`` bar returns. A bar that is not closed is ignored; a repeated bar (same open time) is late.

>>> from ccf.schemas import Kline
>>> kw = KlineWindows("binance", "BTC-USDT")
>>> bar = lambda t, c: Kline("binance", "BTC-USDT", t, t + 60, 60, 100.0, 102.0, 99.0, c, 10.0, 1000.0, 5, 6.0)
>>> rows, late = kw.process([bar(0, 100.0), bar(60_000_000_000, 101.0)])
>>> [r.features["close"] for r in rows], round(rows[1].features["mid_logret"], 6), rows[1].features["taker_buy_ratio"]
([100.0, 101.0], 0.00995, 0.6)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ccf.features.returns import RealizedVol, log_return
from ccf.schemas import FeatureRow, Kline

FEATURE_SET = "kline.v1"
KLINE_FEATURES = ("mid", "close", "mid_logret", "range", "volume", "quote_volume", "trade_count", "taker_buy_ratio",
                  "realized_vol")


class KlineWindows:
    """Bars of one ``venue:symbol`` in, one :class:`FeatureRow` per bar out. Same verbs as the book windows."""

    def __init__(self, venue: str, symbol: str, vol_windows: int = 20) -> None:
        self.venue, self.symbol = venue, symbol
        self.vol = RealizedVol(vol_windows)
        self.last_close = math.nan
        self.last_open: int | None = None
        self.next_end: int | None = None
        self.rows_emitted = 0

    def process(
        self, records: Sequence[Any], on_problem: Callable[[Any, int], None] | None = None
    ) -> tuple[list[FeatureRow], list[Any]]:
        rows: list[FeatureRow] = []
        late: list[Any] = []
        for item in records:
            rec = item[0] if type(item) is tuple else item
            if not isinstance(rec, Kline) or not rec.closed:
                continue
            if self.last_open is not None and rec.ts_event <= self.last_open:
                late.append(rec)
                continue
            r = log_return(self.last_close, rec.close)
            self.vol.update(r)
            self.last_close, self.last_open = rec.close, rec.ts_event
            end = rec.ts_event + rec.interval_s * 1_000_000_000
            self.next_end = end
            feats = {
                "mid": rec.close,
                "close": rec.close,
                "mid_logret": r,
                "range": (rec.high - rec.low) / rec.open if rec.open > 0 else math.nan,
                "volume": rec.volume,
                "quote_volume": rec.quote_volume,
                "trade_count": float(rec.trades),
                "taker_buy_ratio": rec.taker_buy_volume / rec.volume if rec.volume > 0 else math.nan,
                "realized_vol": self.vol.get(),
            }
            rows.append(FeatureRow(self.venue, self.symbol, rec.ts_event, end, FEATURE_SET, True, 0, feats))
            self.rows_emitted += 1
        return rows, late

    def flush(self) -> list[FeatureRow]:
        return []
