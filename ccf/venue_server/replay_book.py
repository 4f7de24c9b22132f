"""The replay's REST books: the venue's level text, kept in step with the stream by Binance's own sync procedure.

A capture holds its REST snapshot as one raw line among the first diffs, and the diff that bridges it
(``U <= lastUpdateId + 1 <= u`` on spot, ``U <= lastUpdateId <= u`` with ``pu`` chaining on futures) may come
before that line. So, per symbol, :class:`SymbolReplay` does what a client does (:class:`ccf.book.SymbolBook`):
it buffers every diff published while it has no exact book, and syncs to the snapshot by draining the buffer through
a fresh :func:`ccf.venues.registry.new_rule` rule (drop the stale diffs, the first applied one must bridge, then
apply in order). From there on every diff goes through the same rule into a :class:`TextBook`. The snapshots are
known from the scan of the capture, so the sync happens when the snapshot line is reached or as soon as the stream
reaches the snapshot's ``lastUpdateId`` (the first diff that is not stale for it), whichever comes first: from
then on the snapshot is in the past and the exact book can be served; a line reached later changes nothing.

What REST serves for a symbol, in order of preference:

1. the exact book (snapshot plus every diff published since), ``lastUpdateId`` = the last applied ``u``. On futures
   the id is the ``U`` of the diff still to come when the capture says so: ``u`` values skip ids there, Binance's
   own futures snapshots fall inside the range of the next diff, and the futures drop rule (``u < lastUpdateId``)
   keeps that diff, so a client that never saw the last diff (it asked before the next one was sent) still bridges;
2. before that (or after a gap in the capture, until its next snapshot): the next snapshot line of the capture, as
   recorded. It is from slightly in the future, which a client following Binance's procedure handles: it buffers
   diffs until one bridges;
3. after a gap in the capture with no snapshot line left: the book with every diff applied anyway (the best there
   is; the client sees the same gap in the stream and resyncs onto this book, which the stream then continues);
4. nothing (``None``): the capture has no snapshot for this symbol. The server answers 400 ``-1121`` as Binance does
   for a symbol it has no book for, so a client fails fast instead of retrying (see :mod:`ccf.venue_server.server`).

>>> sr = SymbolReplay("ETHUSDT", "spot", [b'{"lastUpdateId":10,"bids":[["1.00","2"]],"asks":[["1.10","1"]]}'])
>>> snap = b'{"lastUpdateId":10,"bids":[["1.00","2"]],"asks":[["1.10","1"]]}'
>>> sr = SymbolReplay("ETHUSDT", "spot", [snap])
>>> sr.on_diff({"U": 8, "u": 9, "b": [["0.90", "1"]], "a": []})  # stale for the snapshot: buffered
>>> sr.rest(5)  # the capture's own snapshot (from the future) while the stream has not reached it
b'{"lastUpdateId":10,"bids":[["1.00","2"]],"asks":[["1.10","1"]]}'
>>> sr.on_diff({"U": 10, "u": 12, "b": [["1.05", "3"]], "a": []})  # bridges it, before its line: synced now
>>> sr.rest(5)  # u=9 dropped (stale), u=12 bridged and applied
b'{"lastUpdateId":12,"bids":[["1.05","3"],["1.00","2"]],"asks":[["1.10","1"]]}'
>>> sr.on_snapshot(snap)  # its line, reached later: nothing changes
>>> sr.rest(5) == b'{"lastUpdateId":12,"bids":[["1.05","3"],["1.00","2"]],"asks":[["1.10","1"]]}', sr.counts
(True, Counter({'snapshots': 1}))
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import orjson

from ccf.book import APPLIED, STALE, OrderBook, SyncRule
from ccf.schemas import BookDelta, BookSnapshot
from ccf.venue_server.binance_wire import Market
from ccf.venues.registry import new_rule

logger = logging.getLogger(__name__)

RULE_VENUE: Final[dict[Market, str]] = {"spot": "binance", "futures": "binance_futures"}
"""The :mod:`ccf.venues.registry` venue whose sync rule keeps each market's books."""


def diff_ids(data: Mapping[str, Any]) -> BookDelta:
    """The sequence part of a ``depthUpdate`` payload (no levels: the sync rules read only the ids).

    >>> d = diff_ids({"s": "BTCUSDT", "U": 5, "u": 9, "pu": 4})
    >>> d.first_update_id, d.last_update_id, d.prev_update_id
    (5, 9, 4)
    """
    pu = data.get("pu")
    return BookDelta("binance", str(data.get("s", "")), 0, 0, (), (), first_update_id=int(data["U"]),
                     last_update_id=int(data["u"]), prev_update_id=None if pu is None else int(pu))  # fmt: skip


def synced_rule(market: Market, last_update_id: int) -> SyncRule:
    """A fresh rule of ``market`` reset to a snapshot with ``last_update_id``."""
    rule = new_rule(RULE_VENUE[market])
    rule.reset(BookSnapshot("binance", "", 0, 0, (), (), last_update_id=last_update_id), None, OrderBook())
    return rule


def bridges(market: Market, last_update_id: int, diffs: Iterable[BookDelta]) -> bool:
    """Whether the first non-stale diff of ``diffs`` (one symbol, in order) bridges a snapshot at ``last_update_id``.

    >>> ids = [diff_ids({"U": u0, "u": u1}) for u0, u1 in ((1, 4), (5, 7), (8, 9))]
    >>> bridges("spot", 5, ids), bridges("spot", 9, ids), bridges("spot", 0, ids[1:])
    (True, False, False)
    """
    rule = synced_rule(market, last_update_id)
    for ids in diffs:
        event = rule.check(ids)
        if event is not STALE:
            return event is APPLIED
    return False


class TextBook:
    """Price text -> size text per side, so the answers print the venue's own decimals; ``E``/``T`` on futures."""

    __slots__ = ("asks", "bids", "last_u", "times")

    def __init__(self, snapshot: Mapping[str, Any]) -> None:
        self.last_u = int(snapshot["lastUpdateId"])
        self.times: dict[str, Any] = {k: snapshot[k] for k in ("E", "T") if k in snapshot}
        self.bids: dict[str, str] = dict(snapshot["bids"])
        self.asks: dict[str, str] = dict(snapshot["asks"])

    def apply(self, data: Mapping[str, Any]) -> None:
        """Set every level of a diff (size ``0`` removes it); no sequence check (the caller's rule did that)."""
        for side, key in ((self.bids, "b"), (self.asks, "a")):
            for price, size in data[key]:
                if float(size) == 0.0:
                    side.pop(price, None)
                else:
                    side[price] = size
        self.last_u = int(data["u"])
        if self.times and "E" in data:  # futures snapshots carry E/T; spot ones do not
            self.times = {"E": data["E"], "T": data.get("T", data["E"])}

    def top(self, limit: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The best ``limit`` levels per side, best first.

        >>> TextBook({"lastUpdateId": 1, "bids": [["9.5", "1"], ["10.0", "2"]], "asks": [["10.5", "1"]]}).top(1)
        ([('10.0', '2')], [('10.5', '1')])
        """
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))[:limit]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:limit]
        return bids, asks

    def rest(self, limit: int, last_update_id: int | None = None) -> bytes:
        """Binance's REST depth answer, top ``limit`` levels per side."""
        bids, asks = self.top(limit)
        last = self.last_u if last_update_id is None else last_update_id
        return orjson.dumps({"lastUpdateId": last, **self.times, "bids": bids, "asks": asks})


class SymbolReplay:
    """One symbol's REST book through a replay (see the module docstring).

    ``snapshots`` are the capture's snapshot lines of this symbol, in order; ``next_first`` maps a diff's ``u`` to the
    ``U`` of the symbol's next diff (used on futures only). ``counts`` says what happened: ``applied``, ``stale``,
    ``gaps``, ``snapshots`` (syncs), ``redundant_snapshots`` (a snapshot line reached while the book was exact).
    """

    def __init__(self, symbol: str, market: Market, snapshots: Sequence[bytes] = (),
                 next_first: Mapping[int, int] | None = None) -> None:  # fmt: skip
        self.symbol = symbol
        self.market = market
        self.pending_snapshots: deque[bytes] = deque(snapshots)
        self.next_first = next_first or {}
        self.book: TextBook | None = None
        self.exact = False
        self.counts: Counter[str] = Counter()
        self._rule: SyncRule | None = None
        self._pending: list[tuple[BookDelta, Mapping[str, Any]]] = []
        self._next_book: TextBook | None = None
        self._early = 0  # snapshots synced to before their line was reached

    def on_diff(self, data: Mapping[str, Any]) -> None:
        """A depth diff has been published."""
        ids = diff_ids(data)
        if self.exact and self._rule is not None and self.book is not None:
            event = self._rule.check(ids)
            if event is STALE:
                self.counts["stale"] += 1
                return
            if event is APPLIED:
                self.counts["applied"] += 1
                self.book.apply(data)
                return
            self.exact = False
            self.counts["gaps"] += 1
            logger.warning("replay %s: the capture has a gap at U=%d u=%d (%s); REST serves %s", self.symbol,
                           ids.first_update_id, ids.last_update_id, self._rule.explain(ids),
                           "its next snapshot" if self.pending_snapshots else "the book with the gap")  # fmt: skip
        if self.book is not None:
            self.book.apply(data)
        if self.pending_snapshots:
            self._pending.append((ids, data))
            if synced_rule(self.market, self._next().last_u).check(ids) is not STALE:  # the stream reached it
                self._early += 1
                self._sync(self.pending_snapshots.popleft())

    def on_snapshot(self, raw: bytes) -> None:
        """The replay reached this symbol's next snapshot line: sync to it as a client would (if not done yet)."""
        if self._early:
            self._early -= 1
            return
        if self.pending_snapshots and self.pending_snapshots[0] == raw:
            self.pending_snapshots.popleft()
        if self.exact:
            self.counts["redundant_snapshots"] += 1
            return
        self._sync(raw)

    def _next(self) -> TextBook:
        """The next snapshot of the capture (parsed once; never changed)."""
        if self._next_book is None:
            self._next_book = TextBook(orjson.loads(self.pending_snapshots[0]))
        return self._next_book

    def _sync(self, raw: bytes) -> None:
        self._next_book = None
        self.counts["snapshots"] += 1
        book = TextBook(orjson.loads(raw))
        rule = synced_rule(self.market, book.last_u)
        pending, self._pending = self._pending, []
        exact = True
        for ids, data in pending:
            event = rule.check(ids)
            if event is STALE:
                continue
            if event is not APPLIED and exact:
                exact = False
                self.counts["gaps"] += 1
                logger.warning("replay %s: snapshot %d is not bridged by the diffs around it (%s)", self.symbol,
                               book.last_u, rule.explain(ids))  # fmt: skip
            book.apply(data)
        self.book, self._rule, self.exact = book, rule, exact

    def rest(self, limit: int) -> bytes | None:
        """The REST depth answer now (``None``: the capture has no snapshot for this symbol)."""
        if self.book is not None and self.exact:
            last = self.book.last_u
            if self.market == "futures":
                last = self.next_first.get(last, last)
            return self.book.rest(limit, last)
        if self.pending_snapshots:
            nxt = self._next()
            if limit >= max(len(nxt.bids), len(nxt.asks)):
                return self.pending_snapshots[0]
            return nxt.rest(limit)
        if self.book is not None:
            return self.book.rest(limit)
        return None
