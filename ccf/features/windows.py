"""Exact event-time windows of one symbol: its book, its trades, one :class:`~ccf.schemas.FeatureRow` per window.

Windows are tumbling, aligned to the epoch, ``[start, end)`` in venue time (ns). Rules:

- **Book features** of a window use the book after every book event with event time ``< end``: the book is
  captured when the first book event at or past ``end`` arrives, before it is applied (venues send book events in
  sequence order, so this is exact), or when the window closes if none has arrived yet.
- **Trade features** use trades with event time in ``[start, end)``.
- **Watermark** = the largest event time seen minus ``allowed_lateness``. A window closes when the watermark passes
  its end. A trade for a closed window is *late*: it is counted and returned for routing, never silently dropped.
  A late book event still updates the book (the book's truth is its sequence), and is counted.
- **Every window** between the symbol's first and last event gets a row; a window with no event carries the book
  forward with zero trade flow and says so (``carried = 1``).
- News items count in the window of their *fetched* time; they never move the watermark (our clock, not the
  venue's), so a news item can only be late or wait for its window. News that come before the symbol's first market
  record (a replay from Kafka may bring ``ccf.news`` first) wait for it, then count, or are late if older.
  ``news_sentiment`` is the mean sentiment (:mod:`ccf.news.sentiment`, in [-1, 1]) of the window's items, NaN when
  it has none. A news item comes as ``(item, sentiment)`` (the flow scores each item once,
  :func:`ccf.features.news.route_news`) or bare (scored here).
- The short-horizon signals (multi-level OFI, trade-flow imbalance, queue depletion, scaled inputs) are in
  :mod:`ccf.features.signals`; ``feature_set = "seed"`` adds the original CCF's level features (:mod:`ccf.features.seed`).
- A book that is not whole (before its first snapshot, after a gap or checksum failure until resynced) gives
  ``book_valid = False`` and NaN book features; ``epoch`` counts resyncs. A window with a book update that met a book not
  whole (buffered before a snapshot, or the one that broke it) has book features (the book at its end) but
  ``book_valid = False``: its OFI and book events cover part of the window. So do the windows whose end the breaking
  update is the first past: the updates lost before it may be theirs.

All state pickles (Bytewax recovery snapshots it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ccf.errors import DataError
from ccf.features.book import book_feature_names, book_features
from ccf.features.news import news_sentiment
from ccf.features.ofi import OFI_LEVELS, MultiLevelOFI
from ccf.features.returns import RealizedVol, log_return
from ccf.features.seed import EMA_SPANS, SEED_SET, SEED_VWAP_DEPTH, VWAP_QUANTITIES, SeedFeatures, seed_feature_names
from ccf.features.signals import DEPLETION_DEPTH, SIGNAL_FEATURES, Signals
from ccf.features.trades import TRADE_FEATURES, TradeFlow
from ccf.schemas import BookDelta, BookSnapshot, FeatureRow, Level, NewsItem, Trade

FEATURE_SET = "book.v1"
MAX_WAITING_NEWS = 10_000
"""News items kept for a symbol whose first market record has not come yet (the oldest go late beyond that)."""
NAN = math.nan
_Snap = tuple[bool, int, dict[str, float], int, list[Level], list[Level]]
"""The book captured at a window end: whole?, epoch, book features, last unknown-book time, its best levels."""


class BookKeeper(Protocol):
    """What the window engine needs from a per-symbol synced book (see :mod:`ccf.book`)."""

    @property
    def valid(self) -> bool: ...

    @property
    def epoch(self) -> int: ...

    def on_record(self, record: BookSnapshot | BookDelta, extra: object = None) -> Sequence[Any]:
        """Apply a snapshot or delta; return the problems it raised (gap, checksum, crossed) for routing."""
        ...

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """Best ``n`` bids (descending) and asks (ascending)."""
        ...


def feature_names(levels: Sequence[int] = (1, 5, 10)) -> list[str]:
    """Every feature column of :data:`FEATURE_SET`, in order.

    >>> feature_names((1,))[-7 - len(SIGNAL_FEATURES) : -len(SIGNAL_FEATURES)]
    ['mid_logret', 'realized_vol', 'news_count', 'news_sentiment', 'book_events', 'carried', 'late_trades']
    >>> feature_names((1,))[-len(SIGNAL_FEATURES):][:5]
    ['ofi_l2', 'ofi_l3', 'ofi_l4', 'ofi_l5', 'ofi_depth']
    """
    return [
        *book_feature_names(levels),
        "ofi",
        *TRADE_FEATURES,
        "mid_logret",
        "realized_vol",
        "news_count",
        "news_sentiment",
        "book_events",
        "carried",
        "late_trades",
        *SIGNAL_FEATURES,
    ]


def row_names(cfg: WindowConfig) -> list[str]:
    """Every feature column of the rows ``cfg`` makes: :func:`feature_names`, and the seed set's when chosen."""
    seed = seed_feature_names(cfg.vwap_quantities, cfg.ema_spans) if cfg.seed else []
    return feature_names(cfg.levels) + seed


def window_start(ts: int, width: int) -> int:
    """Start of the epoch-aligned window holding ``ts``.

    >>> window_start(1_700_000_001_500_000_000, 1_000_000_000)
    1700000001000000000
    """
    return ts - ts % width


@dataclass
class WindowConfig:
    width_ns: int = 1_000_000_000
    lateness_ns: int = 500_000_000
    levels: tuple[int, ...] = (1, 5, 10)
    vol_windows: int = 20
    max_gap_ns: int = 3_600_000_000_000
    """A jump forward in event time larger than this restarts the windows (reported) instead of filling the gap
    with empty rows: a symbol silent for an hour, or two clocks that disagree."""
    seed: bool = False
    """rows of :data:`ccf.features.seed.SEED_SET` (every column of :data:`FEATURE_SET` and the seed's) instead"""
    vwap_quantities: tuple[float, ...] = VWAP_QUANTITIES
    ema_spans: tuple[int, ...] = EMA_SPANS


@dataclass
class _Open:
    """What an open window has gathered so far."""

    trades: TradeFlow = field(default_factory=TradeFlow)
    ofi: list[float] = field(default_factory=lambda: [0.0] * OFI_LEVELS)  # per book level, best first
    book_events: int = 0
    news: int = 0
    sentiment: float = 0.0  # sum over the window's news items


class SymbolWindows:
    """Windows of one ``venue:symbol``. Feed it records in arrival order; it returns what closed.

    ``process`` returns ``(rows, late)``: finished :class:`FeatureRow` s in window order, and late records.
    Book problems are passed to ``on_problem(problem, ts_event)`` (the flow routes them to health and dead letters).
    """

    def __init__(self, venue: str, symbol: str, book: BookKeeper, config: WindowConfig | None = None) -> None:
        self.venue = venue
        self.symbol = symbol
        self.book = book
        self.cfg = config or WindowConfig()
        seed = self.cfg.seed
        self._depth = max(*self.cfg.levels, OFI_LEVELS, DEPLETION_DEPTH, SEED_VWAP_DEPTH if seed else 0)
        self._set = SEED_SET if seed else FEATURE_SET
        self.seed = SeedFeatures(self.cfg.vwap_quantities, self.cfg.ema_spans) if seed else None
        self.signals = Signals(self.cfg.vol_windows)
        self.max_ts: int | None = None
        self.next_end: int | None = None  # end of the oldest open window
        self.book_end: int | None = None  # next boundary at which the book is captured
        self.captured: dict[int, _Snap] = {}
        self.unknown_at = -1  # event time of the last book update that met a book that was not whole
        self.open: dict[int, _Open] = {}
        self.ofi = MultiLevelOFI(OFI_LEVELS)
        self.vol = RealizedVol(self.cfg.vol_windows)
        self.last_mid = NAN
        self.late_trades = 0
        self.late_book = 0
        self.waiting_news: list[tuple[NewsItem, object]] = []  # news before the first market record, and its extra
        self.rows_emitted = 0

    # -- public -------------------------------------------------------------------------------------------------
    def process(
        self, records: Sequence[Any], on_problem: Callable[[Any, int], None] | None = None
    ) -> tuple[list[FeatureRow], list[Any]]:
        rows: list[FeatureRow] = []
        late: list[Any] = []
        w = self.cfg.width_ns
        for item in records:
            extra = None
            if type(item) is tuple:  # (record, what the venue's sync rule needs beside it)
                rec, extra = item
            else:
                rec = item
            kind = type(rec)
            if kind is not Trade and kind is not BookDelta and kind is not BookSnapshot and kind is not NewsItem:
                continue  # BookTop and others carry no window feature and never move the clock
            ts = rec.fetched if kind is NewsItem else rec.ts_event
            if kind is BookSnapshot:
                # a snapshot goes into the book where it arrives; its time (for spot REST snapshots our receipt
                # time, not the venue's) never starts, moves or closes windows
                self._apply_book(rec, extra, ts, on_problem, clocked=False)
                continue
            if self.next_end is None:
                if isinstance(rec, NewsItem):  # windows start with the venue's clock, never with ours: wait for it
                    self.waiting_news.append((rec, extra))
                    if len(self.waiting_news) > MAX_WAITING_NEWS:
                        late.append(self.waiting_news.pop(0)[0])
                    continue
                self.next_end = self.book_end = window_start(ts, w) + w
                waiting, self.waiting_news = self.waiting_news, []
                for news, score in waiting:  # news that came before the first market record: theirs, or late
                    self._news(news, score, late)
            elif self.max_ts is not None and ts - self.max_ts > self.cfg.max_gap_ns and kind is not NewsItem:
                self._restart(ts, rows, on_problem)
            if kind is Trade:
                if ts < self.next_end - w:
                    self.late_trades += 1
                    late.append(rec)
                else:
                    self._window(ts).trades.update(rec.price, rec.size, rec.side)
            elif kind is BookDelta:
                self._apply_book(rec, extra, ts, on_problem)
            else:  # news: fetched on our clock, not the venue's, so it never moves the watermark
                self._news(rec, extra, late)
                continue
            if self.max_ts is None or ts > self.max_ts:
                self.max_ts = ts
                self._close_until(ts - self.cfg.lateness_ns, rows)
        return rows, late

    def flush(self) -> list[FeatureRow]:
        """Close every window up to the one holding the last event (end of input)."""
        rows: list[FeatureRow] = []
        if self.max_ts is not None:
            self._close_until(window_start(self.max_ts, self.cfg.width_ns) + self.cfg.width_ns, rows)
        return rows

    # -- internals ----------------------------------------------------------------------------------------------
    def _news(self, item: NewsItem, score: object, late: list[Any]) -> None:
        assert self.next_end is not None
        if item.fetched < self.next_end - self.cfg.width_ns:
            late.append(item)
            return
        win = self._window(item.fetched)
        win.news += 1
        win.sentiment += score if isinstance(score, float) else news_sentiment(item)

    def _window(self, ts: int) -> _Open:
        start = window_start(ts, self.cfg.width_ns)
        win = self.open.get(start)
        if win is None:
            win = self.open[start] = _Open()
        return win

    def _capture(self) -> _Snap:
        if self.book.valid:
            bids, asks = self.book.top(self._depth)
            return True, self.book.epoch, book_features(bids, asks, self.cfg.levels), self.unknown_at, bids, asks
        return False, self.book.epoch, dict.fromkeys(book_feature_names(self.cfg.levels), NAN), 0, [], []

    def _restart(self, ts: int, rows: list[FeatureRow], on_problem: Callable[[Any, int], None] | None) -> None:
        """Event time jumped past ``max_gap_ns``: close what is open, then start windows afresh at ``ts``."""
        assert self.max_ts is not None
        gap_s = (ts - self.max_ts) / 1e9
        rows.extend(self.flush())
        w = self.cfg.width_ns
        self.next_end = self.book_end = window_start(ts, w) + w
        self.captured.clear()
        self.signals.forget()
        if self.seed is not None:
            self.seed.forget()
        self.open = {k: v for k, v in self.open.items() if k >= self.next_end - w}
        self.max_ts = None
        if on_problem is not None:
            on_problem(DataError(f"event time jumped {gap_s:.0f} s ahead: windows restart at {ts}",
                                 venue=self.venue, symbol=self.symbol), ts)

    def _apply_book(
        self,
        rec: BookDelta | BookSnapshot,
        extra: object,
        ts: int,
        on_problem: Callable[[Any, int], None] | None,
        clocked: bool = True,
    ) -> None:
        w = self.cfg.width_ns
        late = False
        closed: range = range(0)  # the window ends this event is the first past
        if clocked:
            assert self.book_end is not None and self.next_end is not None
            if ts >= self.book_end:
                snap = self._capture()
                # one capture serves every boundary this event jumps over (at most max_gap_ns / width of them)
                first = max(self.book_end, self.next_end)
                last = window_start(ts, w)
                closed = range(first, last + 1, w)
                for end in closed:
                    self.captured[end] = snap
                self.book_end = last + w
            late = ts < self.next_end - w
        if late:
            self.late_book += 1
        was_valid = self.book.valid
        problems = self.book.on_record(rec, extra)
        if problems and on_problem is not None:
            for p in problems:
                on_problem(p, ts)
        if clocked and not (was_valid and self.book.valid):
            self.unknown_at = max(self.unknown_at, ts)
            if was_valid:  # this event found the book broken: what was lost may be of the windows it is first past
                for end in closed:
                    ok, epoch, feats, _, bids, asks = self.captured[end]
                    self.captured[end] = (ok, epoch, feats, ts, bids, asks)
        if not self.book.valid:
            self.ofi.forget()
            return
        if not was_valid:
            self.ofi.forget()
        if late or not clocked:
            if not was_valid:  # a snapshot made the book whole: the next update's flow is measured from its top
                bids, asks = self.book.top(OFI_LEVELS)
                if bids and asks:
                    self.ofi.update(bids, asks)
            return
        win = self._window(ts)
        win.book_events += 1
        bids, asks = self.book.top(OFI_LEVELS)
        if bids and asks:
            self.ofi.update(bids, asks, win.ofi)

    def _close_until(self, watermark: int, rows: list[FeatureRow]) -> None:
        w = self.cfg.width_ns
        assert self.next_end is not None and self.book_end is not None
        while self.next_end <= watermark:
            end = self.next_end
            start = end - w
            snap = self.captured.pop(end, None)
            if snap is None:  # no book event at or past `end` yet: the current book is the book at `end`
                snap = self._capture()
                if self.book_end <= end:
                    self.book_end = end + w
            valid, epoch, feats, unknown_at, bids, asks = snap
            # a book update of this window met a book that was not whole: its book flow (OFI, events) is partial
            valid = valid and unknown_at < start
            win = self.open.pop(start, None) or _Open()
            row = dict(feats)
            row["ofi"] = win.ofi[0]
            row.update(win.trades.get())
            mid = feats["mid"]
            r = log_return(self.last_mid, mid)
            if mid == mid:
                self.last_mid = mid
            self.vol.update(r)
            row["mid_logret"] = r
            row["realized_vol"] = self.vol.get()
            row["news_count"] = float(win.news)
            row["news_sentiment"] = win.sentiment / win.news if win.news else NAN
            row["book_events"] = float(win.book_events)
            row["carried"] = 1.0 if win.book_events == 0 and win.trades.count == 0 else 0.0
            row["late_trades"] = float(self.late_trades)
            tf = win.trades
            self.signals.close(row, win.ofi, bids, asks, tf.volume - tf.buy_volume, tf.buy_volume)
            if self.seed is not None:
                self.seed.close(row, bids, asks)
            rows.append(
                FeatureRow(
                    venue=self.venue,
                    symbol=self.symbol,
                    window_start=start,
                    window_end=end,
                    feature_set=self._set,
                    book_valid=valid,
                    epoch=epoch,
                    features=row,
                )
            )
            self.rows_emitted += 1
            self.next_end = end + w
