"""Bybit v5: parsing the recorded captures (orderbook.1 linear and spot, orderbook.500 linear), u continuity,
snapshot resets, resync of one symbol."""

from __future__ import annotations

import pickle
import zipfile
from collections import Counter
from functools import cache

import orjson
import pytest

from ccf.book import BookEvent
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, MarketRecord, Trade
from ccf.venues import bybit
from tests.unit.venue_captures import Replay, capture_path, connection_url, received, sent

LINEAR = "cryptofeed_sample_data/bybit_v5_2025/BYBIT.ws.1.0.gz"
SPOT = "cryptofeed_sample_data/bybit_v5_2025/BYBIT.ws.2.0.gz"
OB500 = "nautilus_trader_test_data/bybit_xrpusdt-ob500.data.zip"


@cache
def _l1(path: str, category: bybit.Category) -> list[MarketRecord]:
    assert bybit.category_of_url(connection_url(path)) == category
    return [r for ts, raw in received(path) for r in bybit.parse(raw, ts, category=category)]


@cache
def _ob500_lines() -> list[str]:
    with zipfile.ZipFile(capture_path(OB500)) as archive:
        (name,) = archive.namelist()
        assert name == "2024-12-01_XRPUSDT_ob500.data"
        return archive.read(name).decode().splitlines()


def _ob500(lines: list[str] | None = None) -> list[MarketRecord]:
    # the download holds no receive time: the push time stands in for it
    return [r for line in lines or _ob500_lines() for r in bybit.parse_linear(line, orjson.loads(line)["ts"] * 10**6)]


def test_every_message_of_the_captures_parses() -> None:
    assert Counter(type(r).__name__ for r in _l1(LINEAR, "linear")) == {"BookSnapshot": 198}
    assert Counter(type(r).__name__ for r in _l1(SPOT, "spot")) == {"BookSnapshot": 139}
    assert Counter(type(r).__name__ for r in _ob500()) == {"BookSnapshot": 1, "BookDelta": 49}


def test_symbols() -> None:
    assert sorted({r.symbol for r in _l1(LINEAR, "linear")}) == [
        "AIOZ-USDT-PERP", "BAND-USDT-PERP", "RAD-USDT-PERP", "SNT-USDT-PERP"]
    assert sorted({r.symbol for r in _l1(SPOT, "spot")}) == [
        "ARB-USDC", "CPOOL-USDT", "KCS-USDT", "MASA-USDT", "OP-USDC", "TUSD-USDT"]
    assert bybit.to_venue_symbol("TUSD-USDT") == "TUSDUSDT"
    assert bybit.to_symbol("BTC-27JUN25", "linear") == "BTC-27JUN25"
    assert [bybit.category_of_url(u) for u in bybit.WS_URLS.values()] == ["spot", "linear", "inverse"]
    with pytest.raises(ValueError, match="not a Bybit"):
        bybit.category_of_url("wss://stream.bybit.com/realtime_public")


def test_subscribe_message_is_what_the_recorder_sent() -> None:
    for path, category in ((LINEAR, "linear"), (SPOT, "spot")):
        for line in sent(path):
            msg = orjson.loads(line)
            symbol = bybit.to_symbol(msg["args"][0].rpartition(".")[2], category)  # type: ignore[arg-type]
            assert bybit.subscribe_message([symbol], ["book"], category=category, depth=1) == [msg]  # type: ignore[arg-type]


def test_level1_contents() -> None:
    first = _l1(LINEAR, "linear")[0]
    assert first == BookSnapshot(
        venue="bybit", symbol="BAND-USDT-PERP", ts_event=1_749_833_474_773_000_000, ts_recv=1_749_833_474_285_131_500,
        bids=((0.6131, 17.9),), asks=((0.6134, 35.4),), last_update_id=24042997,
    )
    spot = _l1(SPOT, "spot")[0]
    assert (spot.symbol, spot.bids, spot.asks, spot.last_update_id, spot.ts_event) == (  # type: ignore[union-attr]
        "OP-USDC", ((0.579, 3886.45),), ((0.58, 4043.62),), 1399781, 1_749_833_472_906_000_000)


def test_orderbook_1_is_snapshots_only_and_u_never_goes_back() -> None:
    for path, category in ((LINEAR, "linear"), (SPOT, "spot")):
        last: dict[str, int] = {}
        steps: Counter[str] = Counter()
        for r in _l1(path, category):
            assert isinstance(r, BookSnapshot)
            assert len(r.bids) == len(r.asks) == 1
            if r.symbol in last:
                steps["same" if r.last_update_id == last[r.symbol] else "next"] += 1
                assert r.last_update_id in (last[r.symbol], last[r.symbol] + 1)  # re-push, or one update
            last[r.symbol] = r.last_update_id
        assert steps["same"] > 0
        assert steps["next"] > 0


def test_orderbook_500_contents() -> None:
    records = _ob500()
    snap, first = records[0], records[1]
    assert isinstance(snap, BookSnapshot)
    assert isinstance(first, BookDelta)
    assert (snap.symbol, snap.ts_event, snap.last_update_id) == ("XRP-USDT-PERP", 1_733_011_200_691_000_000, 20254869)
    assert (len(snap.bids), len(snap.asks)) == (500, 500)
    assert (snap.bids[0], snap.bids[-1], snap.asks[0], snap.asks[-1]) == (
        (1.9531, 6203.0), (1.9031, 877.0), (1.9532, 10480.0), (2.0031, 123.0))
    assert (first.first_update_id, first.last_update_id, first.prev_update_id) == (20254870, 20254870, None)
    assert (first.bids[0], first.asks[0], len(first.bids), len(first.asks)) == ((1.9531, 6198.0), (1.9535, 8415.0), 13, 22)
    assert [r.last_update_id for r in records if isinstance(r, BookSnapshot | BookDelta)] == list(range(20254869, 20254919))


def test_replayed_books_never_cross_and_stay_in_sequence() -> None:
    replay = Replay("bybit", bybit.BybitRule)
    for record in _ob500():
        replay.feed(record)
    assert replay.events == {"SNAPSHOT": 1, "APPLIED": 49}
    xrp = replay.books["XRP-USDT-PERP"]
    assert (xrp.valid, xrp.epoch, xrp.last_update_id) == (True, 0, 20254918)
    # Bybit deletes the levels that leave the top 500 itself
    assert (xrp.book.bid_count, xrp.book.ask_count) == (500, 500)
    assert (xrp.book.best_bid(), xrp.book.best_ask()) == ((1.9537, 10605.0), (1.9538, 6702.0))
    assert pickle.loads(pickle.dumps(xrp)).book.top_asks(500) == xrp.book.top_asks(500)
    for path, category in ((LINEAR, "linear"), (SPOT, "spot")):
        l1 = Replay("bybit", bybit.BybitRule)
        for record in _l1(path, category):
            assert l1.feed(record) is BookEvent.SNAPSHOT
        assert all(sb.valid for sb in l1.books.values())


def test_a_dropped_delta_resyncs_that_symbol_only() -> None:
    lines = _ob500_lines()
    ada = [line.replace("XRPUSDT", "ADAUSDT") for line in lines]
    replay = Replay("bybit", bybit.BybitRule)
    xrp_events = []
    for i, (xrp_line, ada_line) in enumerate(zip(lines, ada, strict=True)):
        if i != 10:  # XRP update 20254879 is lost
            (record,) = _ob500([xrp_line])
            xrp_events.append(replay.feed(record))
        (record,) = _ob500([ada_line])
        replay.feed(record)
    assert xrp_events[10] is BookEvent.GAP
    assert set(xrp_events[11:]) == {BookEvent.BUFFERED}
    xrp, ada_book = replay.books["XRP-USDT-PERP"], replay.books["ADA-USDT-PERP"]
    assert (xrp.valid, xrp.epoch, ada_book.valid, ada_book.epoch) == (False, 1, True, 0)
    assert xrp.rule.explain(_ob500([lines[11]])[0]) .startswith("expected u")  # type: ignore[arg-type]
    # Bybit resends a snapshot (here: the true book at u 20254900): buffered deltas up to it are stale, the rest bridge
    reference = Replay("bybit", bybit.BybitRule)
    for record in _ob500(lines[:32]):
        reference.feed(record)
    ref = reference.books["XRP-USDT-PERP"]
    assert ref.last_update_id == 20254900
    resnap = BookSnapshot(venue="bybit", symbol="XRP-USDT-PERP", ts_event=ref.ts_event, ts_recv=ref.ts_event,
                          bids=tuple(ref.book.top_bids(500)), asks=tuple(ref.book.top_asks(500)),
                          last_update_id=20254900)
    assert xrp.on_snapshot(resnap) is BookEvent.SNAPSHOT
    assert (xrp.valid, xrp.epoch, xrp.last_update_id, xrp.buffered) == (True, 1, 20254918, 0)
    assert (xrp.book.best_bid(), xrp.book.best_ask()) == ((1.9537, 10605.0), (1.9538, 6702.0))


def test_a_restart_snapshot_with_u_1_resets_the_sequence() -> None:
    replay = Replay("bybit", bybit.BybitRule)
    for record in _ob500():
        replay.feed(record)
    restart = ('{"topic":"orderbook.50.XRPUSDT","type":"snapshot","ts":1733011300000,"data":{"s":"XRPUSDT",'
               '"b":[["1.95","10"]],"a":[["1.96","20"]],"u":1,"seq":1},"cts":1733011299990}')
    delta = ('{"topic":"orderbook.50.XRPUSDT","type":"delta","ts":1733011300100,"data":{"s":"XRPUSDT",'
             '"b":[["1.95","0"],["1.94","5"]],"a":[],"u":2,"seq":2},"cts":1733011300090}')
    assert [replay.feed(r) for raw in (restart, delta) for r in bybit.parse_linear(raw, 0)] == [
        BookEvent.SNAPSHOT, BookEvent.APPLIED]
    xrp = replay.books["XRP-USDT-PERP"]
    assert (xrp.book.top_bids(5), xrp.book.top_asks(5), xrp.last_update_id) == ([(1.94, 5.0)], [(1.96, 20.0)], 2)


def test_public_trades() -> None:
    raw = ('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{"T":1672304486865,'
           '"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick","i":"20f43950-d8dd-5b31-9112-a178eb6023af",'
           '"BT":false},{"T":1672304486866,"s":"BTCUSDT","S":"Sell","v":"0.5","p":"16578.00","i":"2","BT":false}]}')
    assert bybit.parse(raw, 7) == [
        Trade(venue="bybit", symbol="BTC-USDT", ts_event=1_672_304_486_865_000_000, ts_recv=7, price=16578.5,
              size=0.001, side="buy", trade_id="20f43950-d8dd-5b31-9112-a178eb6023af"),
        Trade(venue="bybit", symbol="BTC-USDT", ts_event=1_672_304_486_866_000_000, ts_recv=7, price=16578.0,
              size=0.5, side="sell", trade_id="2"),
    ]


@pytest.mark.parametrize("raw", [
    '{"success":true,"ret_msg":"","conn_id":"a38867ec","req_id":"","op":"subscribe"}',
    '{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}',
    '{"topic":"tickers.BTCUSDT","type":"snapshot","ts":1,"data":{"symbol":"BTCUSDT"}}',
])
def test_non_data_messages_give_nothing(raw: str) -> None:
    assert bybit.parse(raw, 0) == []


@pytest.mark.parametrize(("raw", "symbol"), [
    ('{"topic":"orderbook.1', ""),
    ("[]", ""),
    ('{"hello":1}', ""),
    ('{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[]}}', "BTCUSDT"),
    ('{"topic":"orderbook.1.BTCUSDT","type":"weird","ts":1,"data":{"s":"BTCUSDT","b":[],"a":[],"u":1}}', "BTCUSDT"),
    ('{"topic":"orderbook.1.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCUSDT","b":[["x","1"]],"a":[],"u":1}}',
     "BTCUSDT"),
    ('{"topic":"orderbook.1.XYZ","type":"delta","ts":1,"data":{"s":"XYZ","b":[],"a":[],"u":1}}', "XYZ"),
    ('{"topic":"publicTrade.BTCUSDT","ts":1,"data":[{"T":1,"s":"BTCUSDT","S":"Up","v":"1","p":"1","i":"1"}]}',
     "BTCUSDT"),
])
def test_malformed_messages_raise_parse_error(raw: str, symbol: str) -> None:
    with pytest.raises(ParseError) as info:
        bybit.parse(raw, 0)
    assert (info.value.venue, info.value.symbol, info.value.raw) == ("bybit", symbol, raw)
