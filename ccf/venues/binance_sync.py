"""Binance's book sync rules: spot (``U``/``u`` bridging, then ``U == previous u + 1``) and futures (``pu``).

One rule instance per symbol (see :mod:`ccf.book` for the protocol); :func:`new_sync` picks by venue.
"""

from __future__ import annotations

from ccf.book import APPLIED, GAP, SNAPSHOT, STALE, BookEvent, OrderBook
from ccf.schemas import BookDelta, BookSnapshot


class SpotSync:
    """Spot (and Binance.US) diff-depth rule: drop ``u <= lastUpdateId``; the first applied diff has
    ``U <= lastUpdateId + 1 <= u``; every next one has ``U == previous u + 1``."""

    __slots__ = ("bridged", "last")

    def __init__(self) -> None:
        self.last = 0
        self.bridged = False

    def reset(self, snapshot: BookSnapshot, raw: object, book: OrderBook) -> BookEvent:
        self.last = snapshot.last_update_id
        self.bridged = False
        return SNAPSHOT

    def resume(self, last_update_id: int) -> None:
        """Go on as if update ``last_update_id`` was the last applied (a checkpoint of a book in sync)."""
        self.last = last_update_id
        self.bridged = True

    def check(self, delta: BookDelta) -> BookEvent:
        last = self.last
        if delta.last_update_id <= last:
            return STALE
        first = delta.first_update_id
        if first == last + 1 or (first <= last and not self.bridged):
            self.last = delta.last_update_id
            self.bridged = True
            return APPLIED
        return GAP

    def after_apply(self, delta: BookDelta, raw: object, book: OrderBook) -> BookEvent:
        return APPLIED

    def explain(self, delta: BookDelta) -> str:
        want = f"U == {self.last + 1}" if self.bridged else f"U <= {self.last + 1} <= u"
        return f"expected {want}, got U={delta.first_update_id} u={delta.last_update_id}"


class FuturesSync(SpotSync):
    """USD-M / COIN-M rule: drop ``u < lastUpdateId``; the first applied diff has ``U <= lastUpdateId <= u`` (the
    spot form ``U <= lastUpdateId + 1 <= u`` is accepted too); every next one has ``pu == previous u``."""

    __slots__ = ()

    def check(self, delta: BookDelta) -> BookEvent:
        last = self.last
        u = delta.last_update_id
        if self.bridged:
            pu = delta.prev_update_id
            if pu == last or (pu is None and delta.first_update_id == last + 1):
                self.last = u
                return APPLIED
            return STALE if u <= last else GAP
        if u < last:
            return STALE
        if delta.first_update_id <= last + 1:
            self.last = u
            self.bridged = True
            return APPLIED
        return GAP

    def explain(self, delta: BookDelta) -> str:
        want = f"pu == {self.last}" if self.bridged else f"U <= {self.last} <= u"
        return f"expected {want}, got U={delta.first_update_id} u={delta.last_update_id} pu={delta.prev_update_id}"


def new_sync(venue: str = "binance") -> SpotSync | FuturesSync:
    """A fresh sync rule for one symbol of ``venue``."""
    from ccf.venues.binance import MARKETS

    return FuturesSync() if MARKETS[venue].futures else SpotSync()
