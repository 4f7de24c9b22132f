"""OrderBook against a naive dict model (Hypothesis), and the SymbolBook state machine with small rules."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccf.book import (
    APPLIED,
    BUFFERED,
    CHECKSUM,
    CROSSED,
    GAP,
    SNAPSHOT,
    STALE,
    BookEvent,
    OrderBook,
    SymbolBook,
)
from ccf.schemas import BookDelta, BookSnapshot
from ccf.venues.binance import SpotSync

# ---- OrderBook ----


def test_levels_sorted_deleted_and_counted() -> None:
    ob = OrderBook()
    assert (ob.best_bid(), ob.best_ask(), ob.top_bids(3), ob.bid_count, ob.is_crossed()) == (None, None, [], 0, False)
    ob.apply_snapshot([(100.0, 1.0), (99.0, 2.0), (98.0, 0.0)], [(101.0, 3.0), (103.0, 4.0)])
    assert (ob.bid_count, ob.ask_count) == (2, 2)  # the zero-size snapshot level is left out
    ob.apply([(99.5, 5.0), (97.0, 0.0), (100.0, 0.0)], [(102.0, 1.0), (101.0, 0.5)])  # 97 absent: fine
    assert ob.top_bids(10) == [(99.5, 5.0), (99.0, 2.0)]
    assert ob.top_asks(10) == [(101.0, 0.5), (102.0, 1.0), (103.0, 4.0)]
    assert ob.top_asks(1) == [(101.0, 0.5)]
    assert ob.top_bids(0) == []
    assert ob.best_bid() == (99.5, 5.0)
    assert ob.best_ask() == (101.0, 0.5)
    ob.apply([(101.0, 1.0)], [])
    assert ob.is_crossed()
    ob.clear()
    assert (ob.bid_count, ob.ask_count, ob.best_ask()) == (0, 0, None)


def test_equality_and_repr() -> None:
    a, b = OrderBook(), OrderBook()
    a.apply_snapshot([(1.0, 1.0)], [(2.0, 1.0)])
    b.apply([(1.0, 1.0)], [(2.0, 1.0)])
    assert a == b
    b.apply([], [(2.0, 2.0)])
    assert a != b
    assert "bid=(1.0, 1.0)" in repr(a)


levels = st.lists(
    st.tuples(st.integers(1, 60).map(lambda i: i * 0.25), st.sampled_from([0.0, 0.0, 0.001, 1.0, 2.5, 1e6])),
    max_size=12,
)


@settings(deadline=None)  # CI machines are shared: time is not what is tested here
@given(st.lists(st.tuples(levels, levels), max_size=40), levels, levels)
def test_matches_a_dict_model(updates: list[tuple[list[tuple[float, float]], list[tuple[float, float]]]],
                              snap_bids: list[tuple[float, float]], snap_asks: list[tuple[float, float]]) -> None:
    ob = OrderBook()
    ob.apply_snapshot(snap_bids, snap_asks)
    bids = {p: q for p, q in snap_bids if q}
    asks = {p: q for p, q in snap_asks if q}
    for ub, ua in updates:
        ob.apply(ub, ua)
        for model, lv in ((bids, ub), (asks, ua)):
            for p, q in lv:
                if q:
                    model[p] = q
                else:
                    model.pop(p, None)
        want_bids = sorted(bids.items(), reverse=True)
        want_asks = sorted(asks.items())
        assert ob.top_bids(5) == want_bids[:5]
        assert ob.top_asks(5) == want_asks[:5]
        assert ob.top_bids(1000) == want_bids
        assert ob.top_asks(1000) == want_asks
        assert (ob.bid_count, ob.ask_count) == (len(bids), len(asks))
        assert ob.best_bid() == (want_bids[0] if want_bids else None)
        assert ob.is_crossed() == bool(bids and asks and max(bids) >= min(asks))


@settings(deadline=None)
@given(st.lists(st.tuples(levels, levels), max_size=30))
def test_never_crossed_when_inputs_are_not(updates: list[tuple[list[tuple[float, float]], ...]]) -> None:
    ob = OrderBook()
    for ub, ua in updates:
        ob.apply([(p, q) for p, q in ub if p < 7.5], [(p, q) for p, q in ua if p >= 7.75])
        assert not ob.is_crossed()
        bid, ask = ob.best_bid(), ob.best_ask()
        if bid and ask:
            assert bid[0] < ask[0]


@settings(deadline=None)
@given(levels, levels, st.integers(0, 8))
def test_truncate_keeps_the_best(bids: list[tuple[float, float]], asks: list[tuple[float, float]], depth: int) -> None:
    ob = OrderBook()
    ob.apply_snapshot(bids, asks)
    full_b, full_a = ob.top_bids(100), ob.top_asks(100)
    ob.truncate(depth)
    assert ob.top_bids(100) == full_b[:depth]
    assert ob.top_asks(100) == full_a[:depth]
    ob.apply([(100.0, 1.0)], [(200.0, 1.0)])  # still consistent after a truncate
    assert ob.best_bid() == (100.0, 1.0)


@settings(deadline=None)
@given(levels, levels)
def test_pickles(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
    ob = OrderBook()
    ob.apply_snapshot(bids, asks)
    back = pickle.loads(pickle.dumps(ob))
    assert back == ob
    assert (back.top_bids(100), back.top_asks(100)) == (ob.top_bids(100), ob.top_asks(100))
    for book in (ob, back):
        book.apply([(0.25, 9.0)], [(15.0, 9.0)])
    assert back.top_bids(100) == ob.top_bids(100)


# ---- SymbolBook ----


class Seq:
    """A test rule: one id per message (``first == last``), plus an optional checksum = number of bid levels."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def reset(self, snapshot: BookSnapshot, raw: object, book: OrderBook) -> BookEvent:
        self.last = snapshot.last_update_id
        return CHECKSUM if raw == "bad" else SNAPSHOT

    def check(self, delta: BookDelta) -> BookEvent:
        if delta.last_update_id <= self.last:
            return STALE
        if delta.first_update_id != self.last + 1:
            return GAP
        self.last = delta.last_update_id
        return APPLIED

    def after_apply(self, delta: BookDelta, raw: object, book: OrderBook) -> BookEvent:
        return APPLIED if delta.checksum is None or delta.checksum == book.bid_count else CHECKSUM

    def explain(self, delta: BookDelta) -> str:
        return f"want {self.last + 1}"


def delta(i: int, bids: tuple[tuple[float, float], ...] = (), asks: tuple[tuple[float, float], ...] = (),
          checksum: int | None = None) -> BookDelta:
    return BookDelta("v", "A-B", i * 10, i * 10 + 1, bids, asks, i, i, checksum=checksum)


def snapshot(i: int) -> BookSnapshot:
    return BookSnapshot("v", "A-B", i * 10, i * 10 + 1, ((10.0, 1.0), (9.0, 1.0)), ((11.0, 1.0),), i)


def test_buffers_until_the_snapshot_then_drains_through_the_rule() -> None:
    sb = SymbolBook("v", "A-B", Seq())
    assert [sb.on_delta(delta(i, bids=((8.0, float(i)),))) for i in (3, 4, 5, 6)] == [BUFFERED] * 4
    assert (sb.valid, sb.buffered, sb.epoch) == (False, 4, 0)
    assert sb.on_snapshot(snapshot(4)) is SNAPSHOT  # 3, 4 are stale; 5, 6 apply
    assert (sb.valid, sb.buffered, sb.epoch, sb.last_update_id, sb.ts_event) == (True, 0, 0, 6, 60)
    assert sb.book.top_bids(3) == [(10.0, 1.0), (9.0, 1.0), (8.0, 6.0)]
    assert sb.on_delta(delta(6)) is STALE
    assert sb.on_delta(delta(7, asks=((11.0, 0.0),))) is APPLIED
    assert sb.book.best_ask() is None


def test_gap_invalidates_bumps_the_epoch_and_buffers_again() -> None:
    sb = SymbolBook("v", "A-B", Seq())
    sb.on_snapshot(snapshot(1))
    assert sb.on_delta(delta(3)) is GAP
    assert (sb.valid, sb.epoch, sb.book.bid_count, sb.buffered) == (False, 1, 0, 1)
    assert sb.on_delta(delta(4)) is BUFFERED
    assert sb.on_snapshot(snapshot(1)) is GAP  # 3 cannot follow 1 (too old): still invalid, the epoch moves on
    assert (sb.valid, sb.epoch, sb.buffered) == (False, 2, 2)
    assert sb.on_snapshot(snapshot(3)) is SNAPSHOT
    assert (sb.valid, sb.epoch, sb.last_update_id) == (True, 2, 4)
    assert sb.on_snapshot(snapshot(9)) is SNAPSHOT  # replacing a valid book is a resync too
    assert (sb.valid, sb.epoch) == (True, 3)


def test_a_crossing_update_never_shows_a_crossed_book() -> None:
    sb = SymbolBook("v", "A-B", Seq())
    sb.on_snapshot(snapshot(1))
    assert sb.on_delta(delta(2, bids=((12.0, 1.0),))) is CROSSED
    assert (sb.valid, sb.epoch, sb.book.best_bid(), sb.book.is_crossed()) == (False, 1, None, False)
    crossed = BookSnapshot("v", "A-B", 0, 0, ((12.0, 1.0),), ((11.0, 1.0),), 5)
    assert sb.on_snapshot(crossed) is CROSSED
    assert (sb.valid, sb.book.bid_count) == (False, 0)


def test_checksum_failures_invalidate() -> None:
    sb = SymbolBook("v", "A-B", Seq())
    assert sb.on_snapshot(snapshot(1), "bad") is CHECKSUM
    assert (sb.valid, sb.book.bid_count) == (False, 0)
    assert sb.on_snapshot(snapshot(1)) is SNAPSHOT
    assert sb.on_delta(delta(2, bids=((8.0, 1.0),), checksum=3)) is APPLIED
    assert sb.on_delta(delta(3, bids=((7.0, 1.0),), checksum=3)) is CHECKSUM
    assert (sb.valid, sb.epoch) == (False, 1)


def test_buffer_is_bounded_and_invalidate_keeps_it() -> None:
    sb = SymbolBook("v", "A-B", Seq(), max_buffer=3)
    for i in range(1, 6):
        sb.on_delta(delta(i))
    assert sb.buffered == 3
    assert sb.on_snapshot(snapshot(2)) is SNAPSHOT  # 3, 4, 5 kept: they bridge
    assert sb.last_update_id == 5
    sb.invalidate("reconnect")
    assert (sb.valid, sb.epoch, sb.book.bid_count) == (False, 1, 0)
    sb.invalidate("twice")
    assert sb.epoch == 1


def test_symbol_book_pickles_mid_stream() -> None:
    sb = SymbolBook("binance", "ETH-USDT", SpotSync())
    sb.on_delta(BookDelta("binance", "ETH-USDT", 1, 1, ((10.0, 2.0),), (), 5, 7))
    waiting = pickle.loads(pickle.dumps(sb))
    assert (waiting.valid, waiting.buffered, waiting.epoch) == (False, 1, 0)
    snap = BookSnapshot("binance", "ETH-USDT", 2, 2, ((9.0, 1.0),), ((11.0, 1.0),), 6)
    for book in (sb, waiting):
        assert book.on_snapshot(snap) is SNAPSHOT
    live = pickle.loads(pickle.dumps(sb))
    nxt = BookDelta("binance", "ETH-USDT", 3, 3, (), ((10.5, 4.0),), 8, 9)
    assert [b.on_delta(nxt) for b in (sb, waiting, live)] == [APPLIED] * 3
    assert sb.book == waiting.book == live.book
    assert live.book.top_asks(2) == [(10.5, 4.0), (11.0, 1.0)]
    assert (live.rule.last, live.last_update_id, live.valid) == (9, 9, True)


@pytest.mark.parametrize("event", list(BookEvent))
def test_events_are_small_ints(event: BookEvent) -> None:
    assert 0 <= int(event) < 7
    assert pickle.loads(pickle.dumps(event)) is event
