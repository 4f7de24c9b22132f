"""Order-flow imbalance (Cont, Kukanov & Stoikov, 2014) from successive quotes, at the touch and per book level.

Each quote change contributes ``e = Δbid_flow - Δask_flow`` where the bid flow is ``+size`` if the bid price rose,
``size - prev_size`` if it stayed, ``-prev_size`` if it fell (and symmetrically for asks). The window's OFI is the sum.
The multi-level OFI (Xu, Kolm & Cont's generalisation) applies the same rule to the ``m``-th best bid and ask of
successive books, for each level ``m``; a level a book does not have counts as price NaN, size 0 (no flow at it).

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
from collections.abc import Sequence

from ccf.schemas import Level

NAN = math.nan
_MISSING: Level = (NAN, 0.0)  # a level a book does not have
OFI_LEVELS = 5
"""Book levels of the multi-level OFI."""


def ofi_level_names(levels: int = OFI_LEVELS) -> list[str]:
    """Columns of the multi-level OFI: levels 2.. (level 1 is ``ofi``), then the depth-weighted sum.

    >>> ofi_level_names(3)
    ['ofi_l2', 'ofi_l3', 'ofi_depth']
    """
    return [*(f"ofi_l{m}" for m in range(2, levels + 1)), "ofi_depth"]


def depth_weights(levels: int = OFI_LEVELS) -> list[float]:
    """Weight of level ``m`` in ``ofi_depth``: ``1/m``, normalised to sum 1 (the touch counts most).

    >>> [round(w, 4) for w in depth_weights(3)]
    [0.5455, 0.2727, 0.1818]
    """
    raw = [1.0 / m for m in range(1, levels + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def quote_flow(bp: float, bs: float, ap: float, az: float, pbp: float, pbs: float, pap: float, paz: float) -> float:
    """``e`` of the quote ``(bp, bs, ap, az)`` after ``(pbp, pbs, pap, paz)`` (Cont et al.'s rule, one level).

    A NaN price (a level that is not there) compares as neither higher, equal nor lower: its size alone moves.

    >>> quote_flow(100.5, 1.0, 101.0, 4.0, 100.0, 7.0, 101.0, 5.0)
    2.0
    """
    if bp > pbp:
        e = bs
    elif bp == pbp:
        e = bs - pbs
    elif bp < pbp:
        e = -pbs
    else:  # a level missing before or now
        e = bs - pbs
    if ap < pap:
        e -= az
    elif ap == pap:
        e -= az - paz
    elif ap > pap:
        e += paz
    else:
        e -= az - paz
    return e


class OrderFlowImbalance:
    """Running OFI sum; ``reset`` starts a new window but keeps the last quote as reference."""

    __slots__ = ("_ap", "_as", "_bp", "_bs", "_sum")

    def __init__(self) -> None:
        self._bp = NAN
        self._bs = 0.0
        self._ap = NAN
        self._as = 0.0
        self._sum = 0.0

    def update(self, bid_price: float, bid_size: float, ask_price: float, ask_size: float) -> OrderFlowImbalance:
        bp, ap = self._bp, self._ap
        if bp == bp and ap == ap:  # not NaN: we have a reference quote
            self._sum += quote_flow(bid_price, bid_size, ask_price, ask_size, bp, self._bs, ap, self._as)
        self._bp, self._bs, self._ap, self._as = bid_price, bid_size, ask_price, ask_size
        return self

    def forget(self) -> OrderFlowImbalance:
        """Drop the reference quote (after a book resync the next quote is not a change)."""
        self._bp = self._ap = NAN
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


class MultiLevelOFI:
    """Running OFI sums at book levels ``1..levels`` from successive books (best first on each side).

    ``get()`` is the list of sums, level 1 first (level 1 is the touch OFI of :class:`OrderFlowImbalance`).

    >>> m = MultiLevelOFI(2)
    >>> _ = m.update([(100.0, 5.0), (99.0, 1.0)], [(101.0, 5.0), (102.0, 2.0)])
    >>> _ = m.update([(100.0, 7.0), (99.0, 4.0)], [(101.0, 5.0), (102.5, 1.0)])  # level 2: +3 bid, ask up +2
    >>> m.get()
    [2.0, 5.0]
    >>> _ = m.update([(100.0, 7.0)], [(101.0, 5.0), (102.5, 1.0)])  # level 2 bid gone: -4
    >>> m.get()
    [2.0, 1.0]
    """

    __slots__ = ("_asks", "_bids", "_sums", "levels")

    def __init__(self, levels: int = OFI_LEVELS) -> None:
        self.levels = levels
        self._bids: list[Level] | None = None  # the reference book (None: none yet)
        self._asks: list[Level] = []
        self._sums = [0.0] * levels

    def update(self, bids: Sequence[Level], asks: Sequence[Level], into: list[float] | None = None) -> MultiLevelOFI:
        """Add this book's change to the sums (and to ``into``, a window's own per-level sums, when given)."""
        n = self.levels
        pbids, pasks = self._bids, self._asks
        bids, asks = list(bids[:n]), list(asks[:n])
        if pbids is not None:
            cur_b, cur_a = bids, asks
            if len(bids) < n or len(asks) < n or len(pbids) < n or len(pasks) < n:  # a thin book: pad it
                pad = [_MISSING] * n
                cur_b, cur_a, pbids, pasks = (bids + pad)[:n], (asks + pad)[:n], (pbids + pad)[:n], (pasks + pad)[:n]
            sums = self._sums
            for m in range(n):
                b, a, pb, pa = cur_b[m], cur_a[m], pbids[m], pasks[m]
                if b == pb and a == pa:
                    continue
                e = quote_flow(b[0], b[1], a[0], a[1], pb[0], pb[1], pa[0], pa[1])
                sums[m] += e
                if into is not None:
                    into[m] += e
        self._bids, self._asks = bids, asks
        return self

    def forget(self) -> MultiLevelOFI:
        """Drop the reference book (after a resync the next book is not a change)."""
        self._bids, self._asks = None, []
        return self

    def get(self) -> list[float]:
        return list(self._sums)

    def __getstate__(self) -> tuple[int, list[Level] | None, list[Level], list[float]]:
        return (self.levels, self._bids, self._asks, list(self._sums))

    def __setstate__(self, state: tuple[int, list[Level] | None, list[Level], list[float]]) -> None:
        self.levels, self._bids, self._asks, self._sums = state[0], state[1], state[2], list(state[3])
