"""The books of one connection, kept in sync so the ingest flow knows when a symbol needs a new snapshot.

Every snapshot and delta goes through its symbol's :class:`~ccf.book.SymbolBook` (the venue's rule from
:mod:`ccf.venues.registry`), exactly as the features flow will replay them from ``ccf.book``: the ingest flow
publishes every book record in the order it fed them here, snapshots included, so both sides go through the same
states. What this adds is the decision to resync: after ``GAP``, ``CROSSED`` or ``CHECKSUM``, after a snapshot
that is too old to bridge the buffered deltas, and at the start of every websocket session (diffs were lost while
disconnected), the symbol lands in :attr:`BookSync.wanted` with the reason, and a ``resync`` health entry is
written. The caller fetches the snapshot (:mod:`ccf.ingest.fetcher`) and hands it to :meth:`BookSync.on_snapshot`.
No I/O here.

>>> from ccf.schemas import BookDelta, BookSnapshot
>>> sync, out = BookSync("binance", "c"), []
>>> def delta(u): return BookDelta("binance", "ETH-USDT", u, u, ((1.0, 1.0),), (), first_update_id=u, last_update_id=u)
>>> sync.on_delta(delta(5), None, out).name
'BUFFERED'
>>> sync.on_snapshot(BookSnapshot("binance", "ETH-USDT", 4, 4, ((1.0, 2.0),), ((2.0, 1.0),), last_update_id=4),
...                  None, out).name
'SNAPSHOT'
>>> sync.on_delta(delta(7), None, out).name, sync.wanted, out[-1]["kind"], out[-1]["reason"]
('GAP', {'ETH-USDT': 'GAP'}, 'resync', 'GAP')
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ccf.book import GAP, INVALIDATING, SNAPSHOT, BookEvent, SymbolBook, SyncRule
from ccf.ingest.health import health
from ccf.schemas import BookDelta, BookSnapshot
from ccf.venues.registry import new_rule

logger = logging.getLogger(__name__)


class BookSync:
    """One :class:`SymbolBook` per symbol of one connection, and the symbols waiting for a snapshot."""

    def __init__(self, venue: str, conn: str, *, rules: Callable[[str], SyncRule] = new_rule,
                 max_buffer: int = 10_000, checkpoint_ns: int = 0) -> None:
        self.venue = venue
        self.conn = conn
        self.rules = rules
        self.max_buffer = max_buffer
        self.checkpoint_ns = checkpoint_ns
        self._checkpointed: dict[str, int] = {}  # symbol -> event time of its last checkpoint (or first sync)
        self.books: dict[str, SymbolBook] = {}
        self.wanted: dict[str, str] = {}
        """Symbol -> why it needs a snapshot; the caller takes them with :meth:`take_wanted`."""
        self.resyncs = 0

    def book(self, symbol: str) -> SymbolBook:
        sb = self.books.get(symbol)
        if sb is None:
            sb = self.books[symbol] = SymbolBook(self.venue, symbol, self.rules(self.venue), max_buffer=self.max_buffer)
        return sb

    @property
    def valid(self) -> int:
        """How many books are valid now."""
        return sum(1 for sb in self.books.values() if sb.valid)

    def on_delta(self, delta: BookDelta, extra: object, out: list[dict[str, Any]]) -> BookEvent:
        """Feed one delta; an invalidating event asks for a snapshot (and writes a ``resync`` entry to ``out``)."""
        sb = self.books.get(delta.symbol) or self.book(delta.symbol)
        event = sb.on_delta(delta, extra)
        if event in INVALIDATING:
            self._resync(sb, event.name, sb.rule.explain(delta) if event is GAP else f"at update {delta.last_update_id}",
                         out)
        return event

    def checkpoint(self, delta: BookDelta) -> BookSnapshot | None:
        """After ``delta`` went into its book: a checkpoint of the book (see :class:`BookSnapshot`) when the last
        one is ``checkpoint_ns`` of event time old and the venue's rule can go on from one, else ``None``."""
        sb = self.books.get(delta.symbol)
        if not self.checkpoint_ns or sb is None or not sb.valid or sb.last_update_id != delta.last_update_id:
            return None
        last = self._checkpointed.setdefault(delta.symbol, delta.ts_event)
        if delta.ts_event - last < self.checkpoint_ns or getattr(sb.rule, "resume", None) is None:
            return None
        self._checkpointed[delta.symbol] = delta.ts_event
        book = sb.book
        return BookSnapshot(self.venue, delta.symbol, delta.ts_event, delta.ts_recv,
                            tuple(book.top_bids(book.bid_count)), tuple(book.top_asks(book.ask_count)),
                            last_update_id=delta.last_update_id, epoch=sb.epoch, checkpoint=True)

    def on_snapshot(self, snapshot: BookSnapshot, extra: object, out: list[dict[str, Any]]) -> BookEvent:
        """Feed one snapshot; a rejected one (too old to bridge, crossed, bad checksum) asks for another."""
        sb = self.book(snapshot.symbol)
        event = sb.on_snapshot(snapshot, extra)
        out.append(health("snapshot", self.venue, self.conn, snapshot.symbol, last_update_id=snapshot.last_update_id,
                          event=event.name, epoch=sb.epoch, valid=sb.valid))
        if event is SNAPSHOT:
            self.wanted.pop(snapshot.symbol, None)
        else:
            reason = "snapshot_too_old" if event is GAP else event.name
            self._resync(sb, reason, f"snapshot {snapshot.last_update_id} gave {event.name}", out)
        return event

    def new_session(self, symbols: Iterable[str], session: int, out: list[dict[str, Any]]) -> None:
        """A new websocket session: every book of the connection waits for a new snapshot."""
        for symbol in symbols:
            sb = self.book(symbol)
            sb.invalidate(f"session {session}")
            self._resync(sb, "new_session", f"session {session}", out)

    def take_wanted(self) -> dict[str, str]:
        """The symbols that need a snapshot (and why), emptied."""
        wanted, self.wanted = self.wanted, {}
        return wanted

    def _resync(self, sb: SymbolBook, reason: str, detail: str, out: list[dict[str, Any]]) -> None:
        self.resyncs += 1
        self.wanted[sb.symbol] = reason
        logger.info("%s:%s resync (%s): %s", self.venue, sb.symbol, reason, detail)
        out.append(health("resync", self.venue, self.conn, sb.symbol, reason=reason, detail=detail, epoch=sb.epoch))
