"""Exact L2 order books and the generic snapshot + diff synchronisation every venue shares.

Two layers:

* :class:`OrderBook`: one side-sorted price -> size book with float keys. No venue knowledge, no sequence ids.
* :class:`SymbolBook`: an :class:`OrderBook` for one ``(venue, symbol)`` plus ``epoch`` and ``valid``. It buffers
  deltas until a snapshot arrives (real Binance captures deliver the REST snapshot *after* the first diffs, and the
  bridging diff can come before it), then asks the venue's :class:`SyncRule` what to do with every delta.
  Every call returns a :class:`BookEvent` (an ``int``) so a flow can count and route cheaply.

Writing a venue's sync rule
---------------------------
A rule is a small object with the venue's checks; this module holds no venue ``if`` s. One rule instance serves one
symbol and may keep any state it needs (the last sequence id, the venue's level text for checksums, a depth to trim
to); it must pickle. The protocol (see :class:`SyncRule`):

``reset(snapshot, raw, book) -> BookEvent``
    The snapshot's levels are already in ``book``. Reset the sequence state from ``snapshot.last_update_id`` (and,
    for checksum venues, the level text carried in ``raw``). Return ``SNAPSHOT``, or ``CHECKSUM`` if the snapshot
    itself fails the venue's check.
``check(delta) -> BookEvent``
    Before applying: ``APPLIED`` (apply it; the rule may advance its sequence state now, the book always applies
    it), ``STALE`` (already in the book: drop) or ``GAP`` (something is missing: resync).
``after_apply(delta, raw, book) -> BookEvent``
    After applying: ``APPLIED``, or ``CHECKSUM`` (any non-``APPLIED`` value invalidates the book). The place to
    verify a CRC32 or to trim the book to the subscribed depth.
``explain(delta) -> str``
    Words for a log line or a :class:`~ccf.errors.BookError` after a ``GAP``.

Return the :class:`BookEvent` members themselves, not plain ints: the hot path compares them with ``is``.

Two optional parts, for venues that send snapshots in the stream:

``snapshot_supersedes_buffer`` (a class attribute, default ``False``)
    ``True``: a snapshot replaces everything buffered before it (it came later on the same stream), instead of the
    buffer being drained through ``check`` as for a REST snapshot that the stream must bridge (Binance).
``continues(snapshot) -> bool``
    Called before ``reset`` when the book is valid: ``True`` when the snapshot carries on the current sequence
    (Bybit ``orderbook.1`` sends nothing but snapshots), so the levels are replaced without counting a resync.

``raw`` is whatever the venue parser hands over beside the normalized record (``None`` for Binance): Kraken and OKX
pass the level strings so the rule can keep a :class:`ccf.venues.checksums.LevelText`. Sketches:

* Coinbase (one ``sequence`` per message): ``STALE`` if ``seq <= last``, ``GAP`` if ``seq != last + 1``.
* Kraken / OKX: ``reset`` records the snapshot text and checks the snapshot checksum; ``after_apply`` updates the
  text, trims to depth (:meth:`OrderBook.truncate`) and compares ``delta.checksum`` with the CRC32 of the top 10/25.
  OKX also has ``prevSeqId`` -> ``delta.prev_update_id``.
* Bybit (snapshot in the stream, ``u``): the parser emits a :class:`~ccf.schemas.BookSnapshot`; ``check`` drops
  ``u <= last``.

Events after a ``GAP``, ``CROSSED`` or ``CHECKSUM``: ``valid`` becomes ``False``, ``epoch`` goes up by one, the book
is cleared and deltas are buffered again until the caller brings a new snapshot (the flow decides when to fetch it).
A crossed book is never shown: the update that crosses it invalidates it.

>>> from ccf.schemas import BookDelta, BookSnapshot
>>> class Seq:  # one id per message, like Coinbase
...     def reset(self, snapshot, raw, book):
...         self.last = snapshot.last_update_id
...         return BookEvent.SNAPSHOT
...     def check(self, delta):
...         if delta.last_update_id <= self.last:
...             return BookEvent.STALE
...         if delta.first_update_id != self.last + 1:
...             return BookEvent.GAP
...         self.last = delta.last_update_id
...         return BookEvent.APPLIED
...     def after_apply(self, delta, raw, book):
...         return BookEvent.APPLIED
...     def explain(self, delta):
...         return f"expected {self.last + 1}, got {delta.first_update_id}"
>>> def delta(i, bids=(), asks=()):
...     return BookDelta("v", "X-Y", i, i, bids, asks, first_update_id=i, last_update_id=i)
>>> sb = SymbolBook("v", "X-Y", Seq())
>>> BookEvent(sb.on_delta(delta(5, bids=((9.0, 1.0),))))
<BookEvent.BUFFERED: 1>
>>> BookEvent(sb.on_snapshot(BookSnapshot("v", "X-Y", 4, 4, ((10.0, 2.0),), ((11.0, 3.0),), last_update_id=4)))
<BookEvent.SNAPSHOT: 6>
>>> sb.book.top_bids(5), sb.last_update_id, sb.valid
([(10.0, 2.0), (9.0, 1.0)], 5, True)
>>> [BookEvent(sb.on_delta(delta(i))).name for i in (5, 7)]
['STALE', 'GAP']
>>> sb.valid, sb.epoch, sb.book.best_bid()
(False, 1, None)
"""

from __future__ import annotations

import logging
from bisect import bisect_left, insort
from collections.abc import Iterable
from enum import IntEnum
from typing import Final, Protocol

import msgspec

from ccf.schemas import BookDelta, BookSnapshot, Level

logger = logging.getLogger(__name__)


class BookEvent(IntEnum):
    """What one call did to a book."""

    APPLIED = 0
    BUFFERED = 1
    STALE = 2
    GAP = 3
    CROSSED = 4
    CHECKSUM = 5
    SNAPSHOT = 6


APPLIED: Final = BookEvent.APPLIED
BUFFERED: Final = BookEvent.BUFFERED
STALE: Final = BookEvent.STALE
GAP: Final = BookEvent.GAP
CROSSED: Final = BookEvent.CROSSED
CHECKSUM: Final = BookEvent.CHECKSUM
SNAPSHOT: Final = BookEvent.SNAPSHOT

INVALIDATING: Final = frozenset({GAP, CROSSED, CHECKSUM})
"""The events after which the book is invalid until the next snapshot."""


class OrderBook:
    """A price -> size book per side, sorted, with float keys.

    Each side is a ``dict`` (the sizes) plus a sorted ``list`` of its prices kept with :mod:`bisect`; bid prices
    ascend (best last), ask prices are stored negated so they ascend too (best last). Changes near the top then move
    little memory. ``benchmarks/bench_book.py`` measured this against ``sortedcontainers.SortedList`` keys and the
    ``order-book`` C extension.

    >>> ob = OrderBook()
    >>> ob.apply_snapshot([(100.0, 1.0), (99.5, 2.0)], [(100.5, 3.0), (101.0, 4.0)])
    >>> ob.apply([(100.0, 0.0), (99.9, 0.5)], [(100.5, 1.0), (102.0, 0.0)])
    >>> ob.best_bid(), ob.best_ask(), ob.bid_count, ob.ask_count
    ((99.9, 0.5), (100.5, 1.0), 2, 2)
    >>> ob.top_bids(5), ob.top_asks(1), ob.is_crossed()
    ([(99.9, 0.5), (99.5, 2.0)], [(100.5, 1.0)], False)
    """

    __slots__ = ("_ask_keys", "_asks", "_bid_keys", "_bids")

    def __init__(self) -> None:
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._bid_keys: list[float] = []
        self._ask_keys: list[float] = []

    def clear(self) -> None:
        self._bids = {}
        self._asks = {}
        self._bid_keys = []
        self._ask_keys = []

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the whole book; zero sizes are left out."""
        self._bids = {p: q for p, q in bids if q}
        self._asks = {p: q for p, q in asks if q}
        self._bid_keys = sorted(self._bids)
        self._ask_keys = sorted([-p for p in self._asks])

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Set each level's size, in order; size 0 removes the level (removing an absent level is fine)."""
        side = self._bids
        keys = self._bid_keys
        for p, q in bids:
            if q:
                if p not in side:
                    insort(keys, p)
                side[p] = q
            elif side.pop(p, None) is not None:
                del keys[bisect_left(keys, p)]
        side = self._asks
        keys = self._ask_keys
        for p, q in asks:
            if q:
                if p not in side:
                    insort(keys, -p)
                side[p] = q
            elif side.pop(p, None) is not None:
                del keys[bisect_left(keys, -p)]

    def best_bid(self) -> Level | None:
        if not self._bid_keys:
            return None
        p = self._bid_keys[-1]
        return p, self._bids[p]

    def best_ask(self) -> Level | None:
        if not self._ask_keys:
            return None
        p = -self._ask_keys[-1]
        return p, self._asks[p]

    def top_bids(self, n: int) -> list[Level]:
        """The best ``n`` bids, highest price first."""
        side = self._bids
        return [(p, side[p]) for p in self._bid_keys[: -n - 1 : -1]] if n > 0 else []

    def top_asks(self, n: int) -> list[Level]:
        """The best ``n`` asks, lowest price first."""
        side = self._asks
        return [(-k, side[-k]) for k in self._ask_keys[: -n - 1 : -1]] if n > 0 else []

    @property
    def bid_count(self) -> int:
        return len(self._bid_keys)

    @property
    def ask_count(self) -> int:
        return len(self._ask_keys)

    def is_crossed(self) -> bool:
        """Best bid at or above best ask (never true of a healthy book; an empty side is not crossed)."""
        return bool(self._bid_keys and self._ask_keys and self._bid_keys[-1] >= -self._ask_keys[-1])

    def truncate(self, depth: int) -> None:
        """Keep only the best ``depth`` levels of each side (venues whose subscription has a fixed depth).

        >>> ob = OrderBook()
        >>> ob.apply_snapshot([(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)], [(4.0, 1.0), (5.0, 1.0)])
        >>> ob.truncate(1)
        >>> ob.top_bids(9), ob.top_asks(9)
        ([(3.0, 1.0)], [(4.0, 1.0)])
        """
        depth = max(depth, 0)
        if len(self._bid_keys) > depth:
            cut = len(self._bid_keys) - depth
            for p in self._bid_keys[:cut]:
                del self._bids[p]
            del self._bid_keys[:cut]
        if len(self._ask_keys) > depth:
            cut = len(self._ask_keys) - depth
            for k in self._ask_keys[:cut]:
                del self._asks[-k]
            del self._ask_keys[:cut]

    def __eq__(self, other: object) -> bool:
        """Same levels with the same sizes on both sides."""
        if not isinstance(other, OrderBook):
            return NotImplemented
        return self._bids == other._bids and self._asks == other._asks

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return f"OrderBook(bid={self.best_bid()}, ask={self.best_ask()}, levels={self.bid_count}/{self.ask_count})"

    def __getstate__(self) -> tuple[dict[float, float], dict[float, float]]:
        return self._bids, self._asks

    def __setstate__(self, state: tuple[dict[float, float], dict[float, float]]) -> None:
        self._bids, self._asks = state
        self._bid_keys = sorted(self._bids)
        self._ask_keys = sorted([-p for p in self._asks])


class SyncRule(Protocol):
    """A venue's snapshot + delta sequencing rule (see the module docstring)."""

    def reset(self, snapshot: BookSnapshot, raw: object, book: OrderBook) -> BookEvent: ...

    def check(self, delta: BookDelta) -> BookEvent: ...

    def after_apply(self, delta: BookDelta, raw: object, book: OrderBook) -> BookEvent: ...

    def explain(self, delta: BookDelta) -> str: ...


class SymbolBook:
    """One ``(venue, symbol)`` book kept in sync by a :class:`SyncRule`.

    ``epoch`` starts at 0 and goes up by one at every resync (an invalidation, or a snapshot that replaces a valid
    book); ``valid`` is ``True`` from a snapshot until the next invalidation. ``last_update_id`` and ``ts_event``
    belong to the last snapshot or delta that went into the book. At most ``max_buffer`` deltas wait for a snapshot
    (the oldest go first).
    """

    __slots__ = ("_buffer", "book", "epoch", "last_update_id", "max_buffer", "rule", "symbol", "ts_event", "valid",
                 "venue")

    def __init__(self, venue: str, symbol: str, rule: SyncRule, *, max_buffer: int = 10_000) -> None:
        self.venue = venue
        self.symbol = symbol
        self.rule = rule
        self.book = OrderBook()
        self.epoch = 0
        self.valid = False
        self.last_update_id = 0
        self.ts_event = 0
        self.max_buffer = max_buffer
        self._buffer: list[tuple[BookDelta, object]] = []

    @property
    def buffered(self) -> int:
        """How many deltas wait for a snapshot."""
        return len(self._buffer)

    def on_delta(self, delta: BookDelta, raw: object = None) -> BookEvent:
        """Buffer, apply or drop one delta; ``GAP``/``CROSSED``/``CHECKSUM`` invalidate the book."""
        if not self.valid:
            buffer = self._buffer
            buffer.append((delta, raw))
            if len(buffer) > self.max_buffer:
                del buffer[0]
            return BUFFERED
        rule = self.rule
        event = rule.check(delta)
        if event is APPLIED:
            book = self.book
            book.apply(delta.bids, delta.asks)
            event = rule.after_apply(delta, raw, book)
            if event is APPLIED:
                if not book.is_crossed():
                    self.last_update_id = delta.last_update_id
                    self.ts_event = delta.ts_event
                    return APPLIED
                event = CROSSED
        elif event is STALE:
            return STALE
        self._fail(event, delta)
        self._buffer.append((delta, raw))
        return event

    def on_snapshot(self, snapshot: BookSnapshot, raw: object = None) -> BookEvent:
        """Rebuild the book from a snapshot, then apply (or drop) the buffered deltas through the rule.

        Returns ``SNAPSHOT`` when the book is valid afterwards, otherwise the event that invalidated it (for example
        ``GAP`` when the snapshot is older than every buffered delta can bridge: fetch a newer one).
        """
        if snapshot.checkpoint:
            return self._checkpoint(snapshot, raw)
        if self.valid:
            continues = getattr(self.rule, "continues", None)
            if continues is None or not continues(snapshot):
                self.epoch += 1
            self.valid = False
        book = self.book
        book.apply_snapshot(snapshot.bids, snapshot.asks)
        event = self.rule.reset(snapshot, raw, book)
        if event is SNAPSHOT and book.is_crossed():
            event = CROSSED
        if event is not SNAPSHOT:
            book.clear()
            logger.info("%s:%s snapshot %d rejected: %s", self.venue, self.symbol, snapshot.last_update_id, event.name)
            return event
        return self._synced(snapshot)

    def _checkpoint(self, snapshot: BookSnapshot, raw: object) -> BookEvent:
        # a copy of a book in sync (see BookSnapshot): nothing for a valid book; for another, the book as it was
        # after update last_update_id, so the rule goes on from there (rules that cannot: as a venue snapshot)
        if self.valid:
            return STALE
        resume = getattr(self.rule, "resume", None)
        if resume is None:
            return self.on_snapshot(msgspec.structs.replace(snapshot, checkpoint=False), raw)
        self.book.apply_snapshot(snapshot.bids, snapshot.asks)
        resume(snapshot.last_update_id)
        return self._synced(snapshot)

    def _synced(self, snapshot: BookSnapshot) -> BookEvent:
        self.valid = True
        self.last_update_id = snapshot.last_update_id
        self.ts_event = snapshot.ts_event
        pending = self._buffer
        self._buffer = []
        if getattr(self.rule, "snapshot_supersedes_buffer", False):
            pending = []
        for i, (delta, delta_raw) in enumerate(pending):
            event = self.on_delta(delta, delta_raw)
            if event in INVALIDATING:
                self._buffer.extend(pending[i + 1 :])
                return event
        return SNAPSHOT

    def invalidate(self, reason: str = "") -> None:
        """Drop the book and wait for a new snapshot (after a reconnect, say). Buffered deltas are kept."""
        if self.valid:
            logger.info("%s:%s book invalidated (%s)", self.venue, self.symbol, reason)
            self.valid = False
            self.epoch += 1
            self.book.clear()

    def _fail(self, event: BookEvent, delta: BookDelta | None) -> None:
        if self.valid:
            self.epoch += 1
        self.valid = False
        self.book.clear()
        if delta is not None and logger.isEnabledFor(logging.INFO):
            logger.info("%s:%s %s at update %d: %s", self.venue, self.symbol, event.name, delta.last_update_id,
                        self.rule.explain(delta) if event is GAP else "book invalid")

    def __repr__(self) -> str:
        return (f"SymbolBook({self.venue}:{self.symbol}, valid={self.valid}, epoch={self.epoch}, "
                f"last_update_id={self.last_update_id}, {self.book!r})")
