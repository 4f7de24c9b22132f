"""Kraken spot WS v1: parsing the recorded capture, CRC32 book checksums, resync of one symbol."""

from __future__ import annotations

import pickle
from collections import Counter
from functools import cache

import msgspec
import orjson
import pytest

from ccf.book import BookEvent
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, MarketRecord, Trade
from ccf.venues import kraken
from ccf.venues.checksums import kraken_checksum
from tests.unit.venue_captures import Replay, received, sent

FILES = [f"cryptofeed_sample_data/KRAKEN.ws.{n}.0.gz" for n in (48, 49, 50)]
BOOK_FILE = FILES[2]
PAIRS = ["WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR", "ETH/CHF", "OCEAN/XBT", "OMG/USD", "XBT/CHF", "ADA/XBT"]
SYMBOLS = ["WAVES-EUR", "XMR-USD", "KSM-BTC", "GRT-ETH", "SC-EUR", "ETH-CHF", "OCEAN-BTC", "OMG-USD", "BTC-CHF", "ADA-BTC"]


@cache
def _records(path: str) -> list[tuple[int, str, list[tuple[MarketRecord, kraken.KrakenBook | None]]]]:
    return [(ts, raw, kraken.parse_with_text(raw, ts)) for ts, raw in received(path)]


def test_every_message_of_the_capture_parses() -> None:
    kinds: Counter[str] = Counter()
    for path in FILES:
        for _, _, pairs in _records(path):
            kinds.update(type(r).__name__ for r, _ in pairs)
    assert kinds == {"BookSnapshot": 10, "BookDelta": 4269, "Trade": 10}


def test_symbols_map_both_ways() -> None:
    assert [kraken.to_symbol(p) for p in PAIRS] == SYMBOLS
    assert [kraken.to_pair(s) for s in SYMBOLS] == PAIRS
    assert kraken.to_symbol("XDG/XBT") == "DOGE-BTC"


def test_subscribe_message_is_what_the_recorder_sent() -> None:
    for path, channel in zip(FILES, ("trades", "ticker", "book"), strict=True):
        assert [orjson.loads(m) for m in sent(path)] == kraken.subscribe_message(SYMBOLS, [channel], depth=1000)


def test_snapshot_contents() -> None:
    line = next(raw for _, raw in received(BOOK_FILE) if raw.startswith("[992,{\"as\""))
    (snap,) = kraken.parse(line, 5)
    assert isinstance(snap, BookSnapshot)
    assert (snap.venue, snap.symbol, snap.ts_recv, snap.checksum) == ("kraken", "XMR-USD", 5, None)
    assert snap.asks[:2] == ((354.8, 1.4), (354.84, 6.88212752))
    assert snap.bids[:2] == ((354.16, 1.4), (354.14, 30.3))
    assert (len(snap.asks), len(snap.bids)) == (429, 654)
    assert snap.ts_event == max(kraken.seconds_to_ns(lv[2]) for part in orjson.loads(line)[1].values() for lv in part)


def test_update_contents() -> None:
    by_line = {raw: (ts, recs) for ts, raw, recs in _records(BOOK_FILE)}
    ts, recs = by_line['[992,{"b":[["354.15000000","5.00000000","1618678133.365913"]],"c":"2583817756"},"book-1000","XMR/USD"]']
    assert [r for r, _ in recs] == [BookDelta(
        venue="kraken", symbol="XMR-USD", ts_event=1_618_678_133_365_913_000, ts_recv=1_618_678_134_213_106_000,
        bids=((354.15, 5.0),), asks=(), checksum=2583817756,
    )]
    assert ts == 1_618_678_134_213_106_000
    # asks and bids in two dicts, the checksum in the last one
    two = ('[1920,{"a":[["0.042990","364630.28272081","1618678145.920470"]]},'
           '{"b":[["0.042990","0.00000000","1618678145.920708"]],"c":"4105471083"},"book-1000","SC/EUR"]')
    _, recs = by_line[two]
    ((delta, text),) = recs
    assert isinstance(delta, BookDelta)
    assert text is not None
    assert (delta.symbol, delta.asks, delta.bids, delta.checksum) == ("SC-EUR", ((0.04299, 364630.28272081),),
                                                                       ((0.04299, 0.0),), 4105471083)
    assert delta.ts_event == 1_618_678_145_920_708_000
    assert (text.asks, text.bids, text.depth) == ([("0.042990", "364630.28272081")], [("0.042990", "0.00000000")], 1000)


def test_trade_contents() -> None:
    trades = [r for path in FILES for _, _, recs in _records(path) for r, _ in recs if isinstance(r, Trade)]
    assert trades[0] == Trade(venue="kraken", symbol="XMR-USD", ts_event=1_618_678_142_557_535_000,
                              ts_recv=1_618_678_142_592_855_000, price=354.11, size=0.89594024, side="sell",
                              trade_id="1618678142.557535-0")
    two = [t for t in trades if t.ts_recv == 1_618_678_150_856_557_100]
    assert [(t.price, t.size, t.side, t.trade_id) for t in two] == [
        (354.04, 0.28245396, "sell", "1618678150.826417-0"), (353.81, 1.71754604, "sell", "1618678150.827816-1")]
    assert [t.side for t in trades if t.symbol == "SC-EUR"] == ["sell", "buy", "buy", "buy", "sell", "buy"]


@pytest.mark.parametrize("raw", [
    '{"event":"heartbeat"}',
    '{"connectionID":1,"event":"systemStatus","status":"online","version":"1.8.3"}',
    '[1668,{"a":["13.2539",35,"35.7"],"b":["13.2329",185,"185.1"]},"ticker","WAVES/EUR"]',
])
def test_non_data_messages_give_nothing(raw: str) -> None:
    assert kraken.parse(raw, 0) == []


@pytest.mark.parametrize(("raw", "symbol"), [
    ("[992,{\"b\":[[\"354.1\"", ""),
    ('"hello"', ""),
    ('[992,["354.1","1.0","1.0"],"book-10","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[["354.1","1.0"]],"c":"1"},"book-10","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[[354.1,"1.0","1.0"]]},"book-10","XMR/USD"]', "XMR/USD"),
    ('[992,{"b":[["354.1","1.0","1.0"]],"c":"x"},"book-10","XMR/USD"]', "XMR/USD"),
    ('[993,[["354.1","0.8","1618678142.5","x","l",""]],"trade","XMR/USD"]', "XMR/USD"),
    ('[993,[["354.1","0.8","1618678142.5","b","l",""]],"trade","XMRUSD"]', "XMRUSD"),
])
def test_malformed_messages_raise_parse_error(raw: str, symbol: str) -> None:
    with pytest.raises(ParseError) as info:
        kraken.parse(raw, 0)
    assert (info.value.venue, info.value.symbol, info.value.raw) == ("kraken", symbol, raw)


def _replay_capture(corrupt: int | None = None, drop: int | None = None) -> tuple[Replay, list[BookEvent | None]]:
    """Replay the book capture; the ``corrupt``-th / ``drop``-th XMR-USD update gets a wrong checksum / is lost."""
    replay = Replay("kraken", kraken.KrakenRule)
    xmr_events: list[BookEvent | None] = []
    n = 0
    for _, _, recs in _records(BOOK_FILE):
        for record, text in recs:
            if isinstance(record, BookDelta) and record.symbol == "XMR-USD":
                n += 1
                if n == drop:
                    continue
                if n == corrupt and record.checksum is not None:
                    record = msgspec.structs.replace(record, checksum=record.checksum ^ 1)
                xmr_events.append(replay.feed(record, text))
            else:
                replay.feed(record, text)
    return replay, xmr_events


def test_every_checksum_of_the_capture_verifies_and_books_never_cross() -> None:
    replay, _ = _replay_capture()
    rules = [sb.rule for sb in replay.books.values()]
    assert isinstance(rules[0], kraken.KrakenRule)
    verified = sum(r.verified for r in rules if isinstance(r, kraken.KrakenRule))
    failed = sum(r.failed for r in rules if isinstance(r, kraken.KrakenRule))
    assert (verified, failed) == (4269, 0)
    assert replay.events == {"SNAPSHOT": 10, "APPLIED": 4269}
    assert sorted(replay.books) == sorted(SYMBOLS)
    assert all(sb.valid and sb.epoch == 0 for sb in replay.books.values())
    xmr = replay.books["XMR-USD"]
    assert xmr.book.bid_count <= 1000
    assert xmr.book.ask_count <= 1000
    # the rule state pickles (Bytewax snapshots it) and keeps verifying after a round trip
    clone = pickle.loads(pickle.dumps(xmr))
    assert clone.book.top_bids(10) == xmr.book.top_bids(10)
    assert clone.rule.text.top(clone.book, 10)[0]


def test_a_corrupted_checksum_resyncs_that_symbol_only() -> None:
    replay, events = _replay_capture(corrupt=5)
    assert events[:5] == [BookEvent.APPLIED] * 4 + [BookEvent.CHECKSUM]
    assert set(events[5:]) == {BookEvent.BUFFERED}
    xmr = replay.books.pop("XMR-USD")
    assert (xmr.valid, xmr.epoch, xmr.book.best_bid()) == (False, 1, None)
    assert all(sb.valid and sb.epoch == 0 for sb in replay.books.values())
    assert sum(sb.rule.failed for sb in replay.books.values()) == 0  # type: ignore[attr-defined]


def test_a_dropped_update_is_caught_by_the_next_checksum() -> None:
    replay, events = _replay_capture(drop=1)
    assert events[0] is BookEvent.CHECKSUM  # 354.15 x 5 is in the top 10: the very next update fails
    assert not replay.books["XMR-USD"].valid
    assert all(sb.valid for s, sb in replay.books.items() if s != "XMR-USD")


def test_resync_from_a_new_snapshot_then_every_checksum_verifies_again() -> None:
    reference = Replay("kraken", kraken.KrakenRule)
    broken = Replay("kraken", kraken.KrakenRule)
    n = 0
    recovered_at = None
    for _, _, recs in _records(BOOK_FILE):
        for record, text in recs:
            reference.feed(record, text)
            if isinstance(record, BookDelta) and record.symbol == "XMR-USD":
                n += 1
                if n == 3:
                    continue  # lost: the next checksum fails
                if n == 40:  # Kraken's new snapshot after our resubscribe: the reference book as it now is
                    ref = reference.books["XMR-USD"]
                    rule = ref.rule
                    assert isinstance(rule, kraken.KrakenRule)
                    bids, asks = rule.text.top(ref.book, 1000)
                    snap = BookSnapshot(venue="kraken", symbol="XMR-USD", ts_event=record.ts_event,
                                        ts_recv=record.ts_recv, bids=tuple(ref.book.top_bids(1000)),
                                        asks=tuple(ref.book.top_asks(1000)))
                    text_snap = kraken.KrakenBook("XMR/USD", 1000, True, asks, bids, None, record.ts_event)
                    assert broken.feed(snap, text_snap) is BookEvent.SNAPSHOT
                    recovered_at = n
                    continue
            broken.feed(record, text)
    assert recovered_at == 40
    xmr = broken.books["XMR-USD"]
    assert (xmr.valid, xmr.epoch) == (True, 1)
    assert broken.events["CHECKSUM"] == 1
    assert broken.events["BUFFERED"] == 35
    # the failed update and the 35 buffered after it predate the snapshot: dropped as stale, not applied on top
    assert xmr.buffered == 0
    ref_book = reference.books["XMR-USD"].book
    assert (xmr.book.top_bids(1000), xmr.book.top_asks(1000)) == (ref_book.top_bids(1000), ref_book.top_asks(1000))
    rule, ref_rule = xmr.rule, reference.books["XMR-USD"].rule
    assert isinstance(rule, kraken.KrakenRule)
    assert isinstance(ref_rule, kraken.KrakenRule)
    assert (rule.failed, ref_rule.failed) == (1, 0)
    assert rule.verified == ref_rule.verified - 38  # all but updates 3 (lost), 4 (failed) .. 40 (became the snapshot)


def test_book_is_trimmed_to_the_subscribed_depth() -> None:
    replay = Replay("kraken", kraken.KrakenRule)
    snap = '[1,{"as":[["10.0","1.0","1.0"],["11.0","1.0","1.0"]],"bs":[["9.0","1.0","1.0"],["8.0","1.0","1.0"]]},"book-2","A/B"]'
    for record, text in kraken.parse_with_text(snap, 1):
        assert replay.feed(record, text) is BookEvent.SNAPSHOT
    # a better ask pushes 11.0 out of depth 2; Kraken sends no delete for it, and republishes ("r") later
    asks = [("9.5", "2.0"), ("10.0", "1.0")]
    bids = [("9.0", "1.0"), ("8.0", "1.0")]
    c = kraken_checksum(asks, bids)
    upd = f'[1,{{"a":[["9.5","2.0","2.0"]],"c":"{c}"}},"book-2","A/B"]'
    for record, text in kraken.parse_with_text(upd, 2):
        assert replay.feed(record, text) is BookEvent.APPLIED
    assert replay.books["A-B"].book.top_asks(9) == [(9.5, 2.0), (10.0, 1.0)]
    c = kraken_checksum([("10.0", "1.0"), ("11.0", "1.0")], bids)
    upd = f'[1,{{"a":[["9.5","0.0","3.0"],["11.0","1.0","1.0","r"]],"c":"{c}"}},"book-2","A/B"]'
    for record, text in kraken.parse_with_text(upd, 3):
        assert replay.feed(record, text) is BookEvent.APPLIED
    assert replay.books["A-B"].book.top_asks(9) == [(10.0, 1.0), (11.0, 1.0)]


def test_the_rule_refuses_to_run_without_the_level_text() -> None:
    replay = Replay("kraken", kraken.KrakenRule)
    (snap,) = kraken.parse('[1,{"as":[["10.0","1.0","1.0"]],"bs":[["9.0","1.0","1.0"]]},"book-10","A/B"]', 1)
    with pytest.raises(TypeError, match="parse_with_text"):
        replay.feed(snap)
