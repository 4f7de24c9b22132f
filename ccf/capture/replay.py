"""Replay recorded captures through the books: one :class:`~ccf.book.SymbolBook` per ``(venue, symbol)``.

:class:`BookReplayer` routes snapshots and deltas to their book (the rule comes from the venue's
:class:`~ccf.capture.registry.VenueCodec`); :func:`book_replay` turns files into one :class:`BookRow` per book
event that changed a book: every applied delta, every snapshot, and every invalidation (a row with
``book_valid=False``). Sync rules come from :func:`ccf.venues.registry.new_rule`. :func:`write_book_replay` writes those rows to CSV or Parquet.

>>> from ccf.schemas import BookDelta, BookSnapshot
>>> r = BookReplayer()
>>> r.feed(BookDelta("binance", "ETH-USDT", 1, 1, ((10.0, 1.0),), (), first_update_id=5, last_update_id=6)).name
'BUFFERED'
>>> r.feed(BookSnapshot("binance", "ETH-USDT", 2, 2, ((9.0, 1.0),), ((11.0, 1.0),), last_update_id=5)).name
'SNAPSHOT'
>>> r.books["binance", "ETH-USDT"].book.best_bid()
(10.0, 1.0)
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from ccf.book import APPLIED, INVALIDATING, SNAPSHOT, BookEvent, SymbolBook, SyncRule
from ccf.capture.readers import Item, RawFrame, read_records
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, MarketRecord
from ccf.venues.registry import new_rule

logger = logging.getLogger(__name__)


class BookRow(NamedTuple):
    """The state of one book right after one event (``NaN`` prices and 0 sizes on an empty or invalid side)."""

    venue: str
    symbol: str
    ts_event: int
    update_id: int
    best_bid: float
    best_ask: float
    bid_levels: int
    ask_levels: int
    epoch: int
    book_valid: bool
    ts_recv: int
    bid_size: float
    ask_size: float
    event: str


class BookReplayer:
    """Keeps one :class:`SymbolBook` per ``(venue, symbol)`` and counts what happened (``counts``)."""

    def __init__(self, rules: Callable[[str], SyncRule] = new_rule) -> None:
        self.rules = rules
        self.books: dict[tuple[str, str], SymbolBook] = {}
        self.counts: Counter[str] = Counter()

    def book_for(self, venue: str, symbol: str) -> SymbolBook | None:
        """The book of ``(venue, symbol)``, created on first use; ``None`` for a venue without a sync rule."""
        book = self.books.get((venue, symbol))
        if book is None:
            try:
                rule = self.rules(venue)
            except KeyError:
                return None
            book = self.books[venue, symbol] = SymbolBook(venue, symbol, rule)
        return book

    def feed(self, record: MarketRecord, extra: object = None) -> BookEvent | None:
        """Apply a snapshot or delta to its book; ``None`` for any other record."""
        if not isinstance(record, BookDelta | BookSnapshot):
            return None
        book = self.book_for(record.venue, record.symbol)
        if book is None:
            self.counts["no_rule"] += 1
            return None
        event = book.on_delta(record, extra) if isinstance(record, BookDelta) else book.on_snapshot(record, extra)
        self.counts[event.name] += 1
        return event


def replay(items: Iterable[Item], replayer: BookReplayer | None = None
           ) -> Iterator[tuple[MarketRecord, BookEvent | None, SymbolBook | None]]:
    """Every record with what it did to its book (``None`` for non-book records) and the book afterwards.

    Raw frames and parse errors are counted in ``replayer.counts`` and logged, not yielded.
    """
    replayer = replayer if replayer is not None else BookReplayer()
    for item in items:
        extra: object = None
        if isinstance(item, tuple):
            item, extra = item
        if isinstance(item, ParseError):
            replayer.counts["parse_error"] += 1
            logger.warning("skipping a bad line: %s", item)
            continue
        if isinstance(item, RawFrame):
            replayer.counts["raw_frame"] += 1
            continue
        event = replayer.feed(item, extra)
        book = None if event is None else replayer.books.get((item.venue, item.symbol))
        yield item, event, book


def _row(record: MarketRecord, event: BookEvent, sb: SymbolBook) -> BookRow:
    bid = sb.book.best_bid()
    ask = sb.book.best_ask()
    return BookRow(
        venue=sb.venue, symbol=sb.symbol, ts_event=record.ts_event, update_id=sb.last_update_id,
        best_bid=bid[0] if bid else math.nan, best_ask=ask[0] if ask else math.nan,
        bid_levels=sb.book.bid_count, ask_levels=sb.book.ask_count, epoch=sb.epoch, book_valid=sb.valid,
        ts_recv=record.ts_recv, bid_size=bid[1] if bid else 0.0, ask_size=ask[1] if ask else 0.0, event=event.name,
    )


def book_replay(paths: Iterable[str | Path], replayer: BookReplayer | None = None) -> Iterator[BookRow]:
    """One :class:`BookRow` per applied delta, snapshot or invalidation, in receipt-time order."""
    for record, event, sb in replay(read_records(paths, with_extra=True), replayer):
        if sb is not None and event is not None and (event is APPLIED or event is SNAPSHOT or event in INVALIDATING):
            yield _row(record, event, sb)


def write_book_replay(paths: Iterable[str | Path], out: str | Path) -> int:
    """Write :func:`book_replay` rows to ``out`` (``.parquet`` with pyarrow, anything else as CSV); returns rows."""
    out = Path(out)
    rows = book_replay(paths)
    if out.suffix == ".parquet":
        import pyarrow as pa  # heavy: imported only when asked for
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([r._asdict() for r in rows])
        if table.num_rows == 0:
            table = pa.table({name: [] for name in BookRow._fields})
        pq.write_table(table, out)
        return int(table.num_rows)
    n = 0
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(BookRow._fields)
        for row in rows:
            writer.writerow(row)
            n += 1
    return n
