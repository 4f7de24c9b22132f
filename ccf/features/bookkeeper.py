"""The window engine's view of a synced book: :class:`ccf.book.SymbolBook` plus errors for what went wrong."""

from __future__ import annotations

from ccf.book import CHECKSUM, CROSSED, GAP, SymbolBook
from ccf.errors import BookError, ChecksumError, CrossedBookError, SequenceGapError
from ccf.schemas import BookDelta, BookSnapshot, Level
from ccf.venues.registry import new_rule

_ERRORS: dict[int, type[BookError]] = {GAP: SequenceGapError, CROSSED: CrossedBookError, CHECKSUM: ChecksumError}


class SyncedBook:
    """Adapts :class:`SymbolBook` to :class:`ccf.features.windows.BookKeeper`; counts what it saw."""

    def __init__(self, venue: str, symbol: str) -> None:
        self.sb = SymbolBook(venue, symbol, new_rule(venue))
        self.counts = [0] * 7  # per BookEvent value

    @property
    def valid(self) -> bool:
        return self.sb.valid

    @property
    def epoch(self) -> int:
        return self.sb.epoch

    def on_record(self, record: BookSnapshot | BookDelta, extra: object = None) -> list[BookError]:
        sb = self.sb
        if isinstance(record, BookDelta):
            event = sb.on_delta(record, extra)
        else:
            event = sb.on_snapshot(record, extra)
        self.counts[event] += 1
        err = _ERRORS.get(event)
        if err is None:
            return []
        u = record.last_update_id
        reason = f"{event.name.lower()} at update {u}: book invalid until the next snapshot (epoch {sb.epoch})"
        if isinstance(record, BookDelta) and event == GAP:
            reason = f"gap at update {u}: {sb.rule.explain(record)}"
        return [err(reason, venue=sb.venue, symbol=sb.symbol)]

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        book = self.sb.book
        return book.top_bids(n), book.top_asks(n)
