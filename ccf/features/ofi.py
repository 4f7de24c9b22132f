"""Order-flow imbalance (Cont, Kukanov & Stoikov, 2014) from successive best bid/ask quotes.

Each quote change contributes ``e = Δbid_flow - Δask_flow`` where the bid flow is ``+size`` if the bid price rose,
``size - prev_size`` if it stayed, ``-prev_size`` if it fell (and symmetrically for asks). The window's OFI is the sum.

>>> ofi = OrderFlowImbalance()
>>> _ = ofi.update(100.0, 5.0, 101.0, 5.0)  # first quote: reference only
>>> _ = ofi.update(100.0, 7.0, 101.0, 5.0)  # bid size +2
>>> _ = ofi.update(100.5, 1.0, 101.0, 4.0)  # bid price up (+1), ask size -1 (-(-1) = +1)
>>> ofi.get()
4.0
>>> ofi.reset().get()
0.0
"""

from __future__ import annotations

import math


class OrderFlowImbalance:
    """Running OFI sum; ``reset`` starts a new window but keeps the last quote as reference."""

    __slots__ = ("_ap", "_as", "_bp", "_bs", "_sum")

    def __init__(self) -> None:
        self._bp = math.nan
        self._bs = 0.0
        self._ap = math.nan
        self._as = 0.0
        self._sum = 0.0

    def update(self, bid_price: float, bid_size: float, ask_price: float, ask_size: float) -> OrderFlowImbalance:
        bp, ap = self._bp, self._ap
        if bp == bp and ap == ap:  # not NaN: we have a reference quote
            if bid_price > bp:
                e = bid_size
            elif bid_price == bp:
                e = bid_size - self._bs
            else:
                e = -self._bs
            if ask_price < ap:
                e -= ask_size
            elif ask_price == ap:
                e -= ask_size - self._as
            else:
                e += self._as
            self._sum += e
        self._bp, self._bs, self._ap, self._as = bid_price, bid_size, ask_price, ask_size
        return self

    def forget(self) -> OrderFlowImbalance:
        """Drop the reference quote (after a book resync the next quote is not a change)."""
        self._bp = self._ap = math.nan
        return self

    def get(self) -> float:
        return self._sum

    def reset(self) -> OrderFlowImbalance:
        self._sum = 0.0
        return self

    def __getstate__(self) -> tuple[float, float, float, float, float]:
        return (self._bp, self._bs, self._ap, self._as, self._sum)

    def __setstate__(self, state: tuple[float, float, float, float, float]) -> None:
        self._bp, self._bs, self._ap, self._as, self._sum = state
