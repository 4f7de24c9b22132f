"""Short-horizon signals of one window: multi-level OFI, microprice deviation, queue depletion, scaled inputs.

Computed when a window closes, from what the window engine gathered (its per-level OFI sums and trades) and the book
at the window's start (the previous window's end book) and end. Columns (:data:`SIGNAL_FEATURES`):

- ``ofi`` (level 1, Cont et al.), ``ofi_l2`` .. ``ofi_l5`` (the same rule at the m-th best levels), ``ofi_depth``:
  ``sum_m w_m ofi_m`` with ``w_m`` proportional to ``1/m`` (:func:`ccf.features.ofi.depth_weights`).
- ``micro_dev_bps``: ``(microprice - mid) / mid`` in basis points, at the window end.
- ``bid_depletion`` / ``ask_depletion``: ``1 - q_end(p0) / q0``, where ``p0, q0`` are the best bid (ask) price and
  size at the window start and ``q_end(p0)`` the size at ``p0`` at its end (0 when the price traded through or the
  level emptied). 1: the start queue is gone; < 0: it grew. NaN without both books, or when ``p0`` is deeper than
  the :data:`DEPLETION_DEPTH` levels kept.
- ``bid_consumed`` / ``ask_consumed``: taker sell (buy) volume of the window over ``q0``: the share of the start
  touch queue that trades took (can exceed 1 when the price moved through it).
- ``ret_z``: ``mid_logret / realized_vol``; ``ofi_z``, ``ofi_depth_z``: ``ofi`` (``ofi_depth``) over the root mean
  square of its last ``n`` windows (itself included): scale-free across symbols and regimes. 0 when the scale is 0.

>>> s = Signals(n=3)
>>> row = {"mid": 100.0, "microprice": 100.01, "mid_logret": 0.001, "realized_vol": 0.002}
>>> start = ([(99.9, 4.0)], [(100.1, 2.0)])
>>> s.close(row, [4.0, 0.0, 0.0, 0.0, 0.0], *start, sell_volume=1.0, buy_volume=0.0)
>>> end = ([(99.9, 1.0)], [(100.1, 3.0)])
>>> s.close(row, [-2.0, 1.0, 0.0, 0.0, 0.0], *end, sell_volume=3.0, buy_volume=1.0)
>>> row["bid_depletion"], row["ask_depletion"], row["bid_consumed"], row["ask_consumed"]
(0.75, -0.5, 0.75, 0.5)
>>> round(row["micro_dev_bps"], 6), row["ret_z"], round(row["ofi_z"], 4)
(1.0, 0.5, -0.6325)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ccf.features.ofi import OFI_LEVELS, depth_weights, ofi_level_names
from ccf.features.returns import RealizedVol
from ccf.features.trades import TRADE_IMBALANCE
from ccf.schemas import Level

NAN = math.nan
SIGNAL_FEATURES = (
    *ofi_level_names(OFI_LEVELS),
    *TRADE_IMBALANCE,
    "micro_dev_bps",
    "bid_depletion",
    "ask_depletion",
    "bid_consumed",
    "ask_consumed",
    "ret_z",
    "ofi_z",
    "ofi_depth_z",
)
"""Columns that came after ``book.v1``'s first release: they go last in a row (``ofi`` keeps its place)."""
LOOK_BACK = ("bid_depletion", "ask_depletion", "bid_consumed", "ask_consumed", "ret_z", "ofi_z", "ofi_depth_z")
"""Signals that look back past their own window (the previous window's book, rolling scales): after an outage they
differ from a run without it for a while, as ``mid_logret`` and ``realized_vol`` do."""
DEPLETION_DEPTH = 50
"""Levels per side of each window's end book kept for the depletion look-up (a start touch price deeper: NaN)."""
_WEIGHTS = depth_weights(OFI_LEVELS)


def size_at(levels: Sequence[Level], price: float, bids: bool) -> float:
    """Size at ``price`` on one side (best first): 0 if the side has moved through it or the level is empty, NaN if
    it lies deeper than ``levels`` reach.

    >>> bids = [(100.0, 1.0), (99.0, 2.0)]
    >>> size_at(bids, 99.0, True), size_at(bids, 100.5, True), size_at(bids, 99.5, True), size_at(bids, 98.0, True)
    (2.0, 0.0, 0.0, nan)
    """
    for p, s in levels:
        if p == price:
            return s
        if (p < price) if bids else (p > price):  # passed it: a level between two that exist, or through the touch
            return 0.0
    return NAN


def _scaled(x: float, scale: float) -> float:
    return x / scale if scale > 0 else (0.0 if x == 0 else NAN)


class Signals:
    """What the signals keep between windows: the last window's end book and the rolling OFI scales."""

    __slots__ = ("ofi_depth_rms", "ofi_rms", "prev")

    def __init__(self, n: int = 20) -> None:
        self.prev: tuple[Level, Level] | None = None  # best bid and ask at the end of the last window
        self.ofi_rms = RealizedVol(n)
        self.ofi_depth_rms = RealizedVol(n)

    def forget(self) -> Signals:
        """The next window's start book is not known (windows restarted)."""
        self.prev = None
        return self

    def close(
        self,
        row: dict[str, float],
        ofi: Sequence[float],
        bids: Sequence[Level],
        asks: Sequence[Level],
        sell_volume: float,
        buy_volume: float,
    ) -> None:
        """Add the signals of the window to ``row`` (which has the book, ``ofi``, return and volatility columns).

        ``ofi``: the window's per-level OFI sums; ``bids``/``asks``: the book at its end (empty if not whole)."""
        for m in range(1, len(ofi)):
            row[f"ofi_l{m + 1}"] = ofi[m]
        depth = sum(w * e for w, e in zip(_WEIGHTS, ofi, strict=True))
        row["ofi_depth"] = depth
        mid = row["mid"]
        row["micro_dev_bps"] = (row["microprice"] - mid) / mid * 1e4 if mid > 0 else NAN
        prev = self.prev
        if prev is not None and bids and asks:
            (pb, qb), (pa, qa) = prev
            row["bid_depletion"] = 1.0 - size_at(bids, pb, True) / qb
            row["ask_depletion"] = 1.0 - size_at(asks, pa, False) / qa
            row["bid_consumed"] = sell_volume / qb
            row["ask_consumed"] = buy_volume / qa
        else:
            row["bid_depletion"] = row["ask_depletion"] = row["bid_consumed"] = row["ask_consumed"] = NAN
        self.prev = (bids[0], asks[0]) if bids and asks else None
        row["ret_z"] = _scaled(row["mid_logret"], row["realized_vol"])
        row["ofi_z"] = _scaled(ofi[0], self.ofi_rms.update(ofi[0]).get())
        row["ofi_depth_z"] = _scaled(depth, self.ofi_depth_rms.update(depth).get())

    def __getstate__(self) -> tuple[tuple[Level, Level] | None, RealizedVol, RealizedVol]:
        return (self.prev, self.ofi_rms, self.ofi_depth_rms)

    def __setstate__(self, state: tuple[tuple[Level, Level] | None, RealizedVol, RealizedVol]) -> None:
        self.prev, self.ofi_rms, self.ofi_depth_rms = state
