"""Coinbase Exchange (old Pro feed): parsing the recorded capture, snapshot-first books, resync of one symbol."""

from __future__ import annotations

from collections import Counter
from functools import cache

import orjson
import pytest

from ccf.book import BookEvent
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, MarketRecord, Trade
from ccf.venues import coinbase
from tests.unit.venue_captures import Replay, received, sent

CAPTURE = "cryptofeed_sample_data/COINBASE.ws.28.0.gz"
SYMBOLS = ["SKL-USD", "SKL-BTC", "BAND-GBP", "NMR-EUR", "BAND-BTC", "YFI-BTC", "DASH-BTC", "NU-GBP", "CRV-EUR", "SKL-GBP"]


@cache
def _messages() -> list[tuple[int, str, list[MarketRecord]]]:
    return [(ts, raw, coinbase.parse(raw, ts)) for ts, raw in received(CAPTURE)]


def _records() -> list[MarketRecord]:
    return [r for _, _, recs in _messages() for r in recs]


def test_every_message_of_the_capture_parses() -> None:
    assert Counter(type(r).__name__ for r in _records()) == {"BookSnapshot": 10, "BookDelta": 9719, "Trade": 107}


def test_subscribe_message_is_what_the_recorder_sent() -> None:
    got = [orjson.loads(m) for m in sent(CAPTURE)]
    assert got == [coinbase.subscribe_message(SYMBOLS, [c])[0] for c in ("book", "ticker", "trades")]


def test_snapshot_contents() -> None:
    snap = next(r for r in _records() if isinstance(r, BookSnapshot))
    assert (snap.venue, snap.symbol, snap.asks[:2]) == ("coinbase", "BAND-GBP", ((14.8024, 12.77), (14.8069, 12.49)))
    assert snap.ts_event == snap.ts_recv == 1_618_677_817_077_736_000  # the snapshot has no time of its own
    assert snap.bids[-1] == (0.1, 1863.16)
    assert (snap.last_update_id, snap.checksum) == (0, None)


def test_update_contents() -> None:
    deltas = [r for r in _records() if isinstance(r, BookDelta)]
    assert deltas[0] == BookDelta(
        venue="coinbase", symbol="SKL-BTC", ts_event=1_618_677_817_075_687_000, ts_recv=1_618_677_817_118_783_000,
        bids=(), asks=((0.00001306, 660.5),),
    )
    buy = next(d for d in deltas if d.bids)
    assert (buy.symbol, buy.bids, buy.asks, buy.ts_event) == ("SKL-USD", ((0.7885, 0.0),), (), 1_618_677_817_077_621_000)
    (both,) = coinbase.parse('{"type":"l2update","product_id":"SKL-USD","changes":[["buy","0.79","1.5"],'
                             '["sell","0.80","0"],["buy","0.78","2"]],"time":"2021-04-17T16:43:37.5Z"}', 9)
    assert isinstance(both, BookDelta)
    assert (both.bids, both.asks, both.ts_event) == (((0.79, 1.5), (0.78, 2.0)), ((0.8, 0.0),), 1_618_677_817_500_000_000)


def test_trade_contents_take_the_opposite_of_the_maker_side() -> None:
    trades = [r for r in _records() if isinstance(r, Trade)]
    # last_match of BAND-GBP: maker side "sell", so a buyer took it
    assert trades[0] == Trade(venue="coinbase", symbol="BAND-GBP", ts_event=1_618_677_810_244_075_000,
                              ts_recv=1_618_677_817_079_762_000, price=14.7775, size=0.04, side="buy",
                              trade_id="881613")
    skl = next(t for t in trades if t.trade_id == "1568268")
    # maker "sell" 450 @ 0.791: the 450 resting at the snapshot's best ask 0.7910 was lifted by a buyer
    assert (skl.symbol, skl.price, skl.size, skl.side, skl.ts_event) == (
        "SKL-USD", 0.791, 450.0, "buy", 1_618_677_817_121_358_000)
    assert Counter(t.side for t in trades) == {"buy": 53, "sell": 54}


@pytest.mark.parametrize("raw", [
    '{"type":"subscriptions","channels":[]}',
    '{"type":"heartbeat","sequence":1,"last_trade_id":1,"product_id":"SKL-USD","time":"2021-04-17T16:43:37Z"}',
    '{"type":"ticker","sequence":1,"product_id":"NU-GBP","price":"0.4394"}',
    '{"type":"error","message":"Failed to subscribe"}',
])
def test_non_data_messages_give_nothing(raw: str) -> None:
    assert coinbase.parse(raw, 0) == []


@pytest.mark.parametrize(("raw", "symbol"), [
    ('{"type":"l2update"', ""),
    ('["l2update"]', ""),
    ('{"type":"mystery"}', ""),
    ('{"type":"l2update","product_id":"SKL-USD","changes":[["up","0.79","1"]],"time":"2021-04-17T16:43:37Z"}', "SKL-USD"),
    ('{"type":"l2update","product_id":"SKL-USD","changes":[["buy","0.79","1"]],"time":"17 April 2021"}', "SKL-USD"),
    ('{"type":"l2update","product_id":"SKL-USD","changes":[["buy","0.79"]],"time":"2021-04-17T16:43:37Z"}', "SKL-USD"),
    ('{"type":"snapshot","product_id":"SKL-USD","bids":[["x","1"]],"asks":[]}', "SKL-USD"),
    ('{"type":"match","trade_id":1,"side":"sell","size":"1","product_id":"SKL-USD","time":"2021-04-17T16:43:37Z"}',
     "SKL-USD"),
])
def test_malformed_messages_raise_parse_error(raw: str, symbol: str) -> None:
    with pytest.raises(ParseError) as info:
        coinbase.parse(raw, 0)
    assert (info.value.venue, info.value.symbol, info.value.raw) == ("coinbase", symbol, raw)


def test_replayed_books_never_cross_and_match_the_venue_ticker() -> None:
    replay = Replay("coinbase", coinbase.CoinbaseRule)
    matched = 0
    seen: set[str] = set()
    for _, raw, recs in _messages():
        msg = orjson.loads(raw)
        sb = replay.books.get(msg.get("product_id", ""))
        # Coinbase's ticker comes with each trade and carries its best bid/ask; it must agree with our book
        # (the first ticker of each product is the one sent at subscribe time, older than our snapshot)
        if msg["type"] == "ticker" and msg["product_id"] not in seen:
            seen.add(msg["product_id"])
        elif msg["type"] == "ticker":
            assert sb is not None
            bid, ask = sb.book.best_bid(), sb.book.best_ask()
            assert bid is not None
            assert ask is not None
            assert (bid[0], ask[0]) == (float(msg["best_bid"]), float(msg["best_ask"])), msg
            matched += 1
        for record in recs:
            replay.feed(record)
    assert matched == 97  # 107 tickers, 10 of them at subscribe time
    assert replay.events == {"SNAPSHOT": 10, "APPLIED": 9719}
    assert sorted(replay.books) == sorted(SYMBOLS)
    assert all(sb.valid and sb.epoch == 0 for sb in replay.books.values())


def test_updates_before_the_first_snapshot_wait_and_updates_older_than_it_are_dropped() -> None:
    replay = Replay("coinbase", coinbase.CoinbaseRule)
    early = BookDelta(venue="coinbase", symbol="X-Y", ts_event=1, ts_recv=1, bids=((9.0, 1.0),), asks=())
    late = BookDelta(venue="coinbase", symbol="X-Y", ts_event=3, ts_recv=3, bids=((9.5, 1.0),), asks=())
    assert replay.feed(early) is BookEvent.BUFFERED
    assert replay.feed(late) is BookEvent.BUFFERED
    snap = BookSnapshot(venue="coinbase", symbol="X-Y", ts_event=2, ts_recv=2, bids=((8.0, 1.0),), asks=((10.0, 1.0),))
    assert replay.feed(snap) is BookEvent.SNAPSHOT
    assert replay.books["X-Y"].book.top_bids(5) == [(9.5, 1.0), (8.0, 1.0)]  # 9.0 came before the snapshot


def test_a_crossing_update_resyncs_that_symbol_only() -> None:
    replay = Replay("coinbase", coinbase.CoinbaseRule)
    bad_at = None
    for i, (ts, _, recs) in enumerate(_messages()):
        for record in recs:
            if bad_at is None and isinstance(record, BookDelta) and record.symbol == "SKL-USD" and i > 100:
                bad_at = ts  # a bid far above the best ask: a lost delete would look like this
                cross = BookDelta(venue="coinbase", symbol="SKL-USD", ts_event=record.ts_event, ts_recv=ts,
                                  bids=((5.0, 1.0),), asks=())
                assert replay.feed(cross) is BookEvent.CROSSED
            replay.feed(record)
    skl = replay.books.pop("SKL-USD")
    assert (skl.valid, skl.epoch, skl.book.best_bid()) == (False, 1, None)
    assert skl.buffered > 0
    assert all(sb.valid and sb.epoch == 0 for sb in replay.books.values())
    # resubscribing brings a new snapshot: everything buffered before it is stale
    snapshot = next(r for r in _records() if isinstance(r, BookSnapshot) and r.symbol == "SKL-USD")
    fresh = BookSnapshot(venue="coinbase", symbol="SKL-USD", ts_event=bad_at or 0, ts_recv=(bad_at or 0) + 10**12,
                         bids=snapshot.bids, asks=snapshot.asks)
    assert BookEvent(skl.on_snapshot(fresh)) is BookEvent.SNAPSHOT
    assert (skl.valid, skl.epoch, skl.buffered, skl.book.best_bid()) == (True, 1, 0, snapshot.bids[0])
