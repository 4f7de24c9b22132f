"""Binance parsers and sync rules on every recorded Binance message (spot, Binance.US, USD-M, COIN-M).

Each captured message is parsed twice: by :mod:`ccf.venues.binance` and by a slow oracle here (``orjson`` +
``float()`` per string, symbols from a table written by hand), and the records must be equal, field by field.
Samples read off the raw files by eye pin the conventions (sides, ids, times).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from ccf.book import APPLIED, GAP, SNAPSHOT, STALE, OrderBook
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, BookTop, Kline, MarketRecord, Trade
from ccf.venues import binance
from tests.datafiles import data_file

CF = "cryptofeed_sample_data/"
HFT = "hftbacktest_binance_raw_ws/"
LOGS = "binance_spot_btcusdt_depth_1000ms_2025-07_small/"

SYMBOLS = {  # every symbol in the captures, split by hand
    "NKNUSDT": "NKN-USDT", "BLZETH": "BLZ-ETH", "LRCBTC": "LRC-BTC", "RUNEEUR": "RUNE-EUR",
    "SWRVBUSD": "SWRV-BUSD", "VETETH": "VET-ETH", "GTOBTC": "GTO-BTC", "BUSDTRY": "BUSD-TRY", "QSPBTC": "QSP-BTC",
    "ADARUB": "ADA-RUB", "PERLBNB": "PERL-BNB", "AAVEUPUSDT": "AAVEUP-USDT", "ONTTRY": "ONT-TRY",
    "STEEMETH": "STEEM-ETH", "SUSHIUSDT": "SUSHI-USDT", "AKROUSDT": "AKRO-USDT", "KEEPUSDT": "KEEP-USDT",
    "CTKUSDT": "CTK-USDT", "CRVUSDT": "CRV-USDT", "COMPUSDT": "COMP-USDT", "OMGBUSD": "OMG-BUSD",
    "ZRXUSDT": "ZRX-USDT", "ETHUSDT": "ETH-USDT", "BTCUSDT": "BTC-USDT",
    "LINKUSD_211231": "LINK-USD-211231", "LINKUSD_PERP": "LINK-USD-PERP", "TRXUSD_PERP": "TRX-USD-PERP",
    "ETCUSD_PERP": "ETC-USD-PERP", "BTCUSD_211231": "BTC-USD-211231", "XRPUSD_PERP": "XRP-USD-PERP",
    "EOSUSD_PERP": "EOS-USD-PERP", "BCHUSD_PERP": "BCH-USD-PERP", "BCHUSD_210924": "BCH-USD-210924",
    "ETHUSD_210924": "ETH-USD-210924",
}

CRYPTOFEED_WS = [
    ("BINANCE.ws.1.0.gz", "binance", 265),
    ("binance_2021-04-17/BINANCE.ws.1.0.gz", "binance", 1228),
    ("BINANCE_US.ws.1.0.gz", "binance_us", 480),
    ("BINANCE_FUTURES.ws.1.0.gz", "binance_futures", 1535),
    ("BINANCE_DELIVERY.ws.1.0.gz", "binance_delivery", 4371),
]
CRYPTOFEED_HTTP = [
    ("BINANCE.http.0.0.gz", "binance", 4),
    ("binance_2021-04-17/BINANCE.http.0.0.gz", "binance", 10),
    ("BINANCE_US.http.0.0.gz", "binance_us", 4),
    ("BINANCE_FUTURES.http.0.0.gz", "binance_futures", 4),
    ("BINANCE_DELIVERY.http.0.0.gz", "binance_delivery", 10),
]
HFT_FILES = [
    ("spot_ethusdt_20240808.gz", "binance", 33618),
    ("spot_ethusdt_20240809.gz", "binance", 46126),
    ("usdm_btcusdt_20240718.gz", "binance_futures", 11414),
    ("usdm_btcusdt_20240719.gz", "binance_futures", 60570),
    ("spot_btcusdt_20230405.dat.gz", "binance", 15088),
]


# ---- a minimal, independent reading of the files ----


def ws_lines(relative: str) -> Iterator[tuple[int, str]]:
    """``(ts_recv_ns, raw)`` of every received message of a cryptofeed capture."""
    with gzip.open(data_file(CF + relative), "rt", encoding="utf-8") as f:
        for line in f:
            stamp, sep, raw = line.rstrip("\n").partition(": ")
            if sep and stamp[:1].isdigit():
                sec, _, frac = stamp.partition(".")
                yield int(sec) * 10**9 + int((frac + "0" * 9)[:9]), raw


def http_lines(relative: str) -> Iterator[tuple[str, int, str]]:
    with gzip.open(data_file(CF + relative), "rt", encoding="utf-8") as f:
        for line in f:
            if " -> " in line:
                url, _, rest = line.rstrip("\n").partition(" -> ")
                stamp, _, body = rest.partition(": ")
                sec, _, frac = stamp.partition(".")
                yield url, int(sec) * 10**9 + int((frac + "0" * 9)[:9]), body


def hft_lines(relative: str) -> Iterator[tuple[int, bytes]]:
    with gzip.open(data_file(HFT + relative), "rb") as f:
        for line in f:
            stamp, _, raw = line.rstrip(b"\n").partition(b" ")
            ts = int(stamp)
            yield (ts * 1000 if ts < 10**17 else ts), raw


# ---- the oracle ----


def _levels(rows: list[list[str]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(p), float(q)) for p, q in rows)


def _ms(d: dict[str, Any], ts_recv: int) -> int:
    t = d.get("T", d.get("E"))
    return 0 if t is None else t * 1_000_000  # no venue time: NO_VENUE_TIME until EventTimes stamps it


def oracle(raw: str | bytes, ts: int, venue: str) -> MarketRecord:
    msg = orjson.loads(raw)
    d = msg.get("data", msg)
    symbol = SYMBOLS[d["s"]]
    kind = d.get("e", "bookTicker")
    if kind == "depthUpdate":
        return BookDelta(venue, symbol, _ms(d, ts), ts, _levels(d["b"]), _levels(d["a"]), d["U"], d["u"], d.get("pu"))
    if kind in ("trade", "aggTrade"):
        trade_id = str(d["t"]) if kind == "trade" else f"a{d['a']}"
        return Trade(venue, symbol, d["T"] * 10**6, ts, float(d["p"]), float(d["q"]), "sell" if d["m"] else "buy",
                     trade_id)
    if kind == "bookTicker":
        return BookTop(venue, symbol, _ms(d, ts), ts, float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"]),
                       d["u"])
    assert kind == "kline", kind
    k = d["k"]
    assert k["i"] == "1m"
    return Kline(venue, symbol, k["t"] * 10**6, ts, 60, float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]),
                 float(k["v"]), float(k["q"]), k["n"], float(k["V"]), k["x"])


# ---- every message ----


@pytest.mark.parametrize(("relative", "venue", "count"), CRYPTOFEED_WS)
def test_every_cryptofeed_message_equals_the_oracle(relative: str, venue: str, count: int) -> None:
    n = 0
    for ts, raw in ws_lines(relative):
        assert binance.parse_message(raw, ts, venue) == oracle(raw, ts, venue), raw
        n += 1
    assert n == count


@pytest.mark.parametrize(("relative", "venue", "count"), CRYPTOFEED_HTTP)
def test_every_rest_snapshot_equals_the_oracle(relative: str, venue: str, count: int) -> None:
    n = 0
    for url, ts, body in http_lines(relative):
        (snap,) = binance.parse_rest(url, body, ts, venue)
        d = orjson.loads(body)
        symbol = url.split("symbol=")[1].split("&")[0]
        assert snap == BookSnapshot(venue, SYMBOLS[symbol], _ms(d, ts), ts, _levels(d["bids"]), _levels(d["asks"]),
                                    d["lastUpdateId"])
        n += 1
    assert n == count


@pytest.mark.parametrize(("relative", "venue", "count"), HFT_FILES)
def test_every_hftbacktest_message_equals_the_oracle(relative: str, venue: str, count: int) -> None:
    n = 0
    for ts, raw in hft_lines(relative):
        if raw.startswith(b'{"lastUpdateId"'):
            d = orjson.loads(raw)
            snap = binance.parse_depth_snapshot(raw, ts, relative.split("_")[1].upper(), venue)
            assert snap.bids == _levels(d["bids"])
            assert snap.asks == _levels(d["asks"])
            assert len(snap.bids) == len(snap.asks) == 1000
        else:
            assert binance.parse_message(raw, ts, venue) == oracle(raw, ts, venue)
        n += 1
    assert n == count


def test_the_2025_depth_logs_equal_the_oracle() -> None:
    for name in ("btcLog_2b61c6f3.jsonl", "btcLog_458e2245.jsonl"):
        lines = data_file(LOGS + name).read_bytes().splitlines()
        assert lines
        for raw in lines:
            assert binance.parse_depth_update(raw, 7) == oracle(raw, 7, "binance")


def test_git_conflict_markers_are_parse_errors_and_the_rest_parses() -> None:
    lines = data_file(LOGS + "btcLog_ad0b3228_with_git_conflict_markers.jsonl").read_bytes().splitlines()
    bad = []
    for i, raw in enumerate(lines, 1):
        if raw.startswith(b"{"):
            assert binance.parse_message(raw, 0) == oracle(raw, 0, "binance")
            continue
        with pytest.raises(ParseError) as info:
            binance.parse_message(raw, 0)
        assert info.value.venue == "binance"
        assert info.value.raw == raw
        bad.append(i)
    assert bad == [1, 70, 71]


# ---- samples read by eye ----


def test_samples_spot() -> None:
    msgs = list(ws_lines("BINANCE.ws.1.0.gz"))
    ts, raw = msgs[0]
    d = binance.parse_message(raw, ts)
    assert d == BookDelta("binance", "NKN-USDT", 1633998512068000000, 1633998512063356900,
                          ((0.3513, 6195.0), (0.3475, 5548.0), (0.3464, 6222.0)), (), 499869750, 499869752, None)
    top = binance.parse_message(msgs[7][1], msgs[7][0])
    assert top == BookTop("binance", "NKN-USDT", 0, 1633998513377805000, 0.3521, 672.0, 0.3526,
                          3199.0, 499869768)  # spot bookTicker has no time: NO_VENUE_TIME until stamped
    agg = next(binance.parse_agg_trade(r, t) for t, r in msgs if "@aggTrade" in r)
    assert agg == Trade("binance", "NKN-USDT", 1633998523963000000, 1633998523957215000, 0.3528, 58.0, "buy",
                        "a15683430")
    kline = next(binance.parse_kline(r, t) for t, r in msgs if "@kline" in r)
    assert kline == Kline("binance", "NKN-USDT", 1633998480000000000, 1633998523957297800, 60, 0.3527, 0.3528,
                          0.3522, 0.3528, 25877.0, 9116.046, 30, 58.0, False)


def test_samples_futures_and_coin_m() -> None:
    msgs = list(ws_lines("BINANCE_FUTURES.ws.1.0.gz"))
    top = binance.parse_book_ticker(msgs[0][1], msgs[0][0], "binance_futures")
    assert (top.symbol, top.update_id, top.bid_price, top.bid_size, top.ask_price, top.ask_size, top.ts_event) == (
        "SUSHI-USDT", 600859600576, 7.611, 2.0, 7.612, 297.0, 1626992741012000000)
    d = binance.parse_depth_update(msgs[1][1], msgs[1][0], "binance_futures")
    assert (d.first_update_id, d.last_update_id, d.prev_update_id, d.ts_event) == (
        600859599090, 600859600917, 600859598061, 1626992741024000000)  # T, not E
    assert d.bids == ((7.504, 813.0), (7.609, 0.0), (7.611, 2.0))
    assert d.asks == ((7.615, 1563.0), (7.622, 3284.0))
    agg = next(binance.parse_agg_trade(r, t, "binance_futures") for t, r in msgs if "@aggTrade" in r)
    assert (agg.symbol, agg.trade_id, agg.price, agg.size, agg.side) == ("CTK-USDT", "a16599292", 1.011, 10.0, "buy")
    coin = [(t, r) for t, r in ws_lines("BINANCE_DELIVERY.ws.1.0.gz")]
    top = binance.parse_message(coin[0][1], coin[0][0], "binance_delivery")
    assert isinstance(top, BookTop)
    assert (top.venue, top.symbol, top.bid_price, top.bid_size, top.ask_price, top.ask_size) == (
        "binance_delivery", "BCH-USD-PERP", 427.84, 24.0, 427.90, 669.0)
    agg = next(binance.parse_agg_trade(r, t, "binance_delivery") for t, r in coin if "@aggTrade" in r)
    assert (agg.symbol, agg.trade_id, agg.price, agg.size, agg.side) == ("BCH-USD-PERP", "a11285749", 427.91, 3.0,
                                                                         "sell")


def test_samples_rest_snapshots() -> None:
    url, ts, body = next(http_lines("BINANCE.http.0.0.gz"))
    (snap,) = binance.parse_rest(url, body, ts, "binance")
    assert isinstance(snap, BookSnapshot)
    assert (snap.symbol, snap.last_update_id, snap.ts_event, snap.ts_recv, snap.bids[0]) == (
        "NKN-USDT", 499869752, 0, 1633998512320639000, (0.3521, 672.0))  # spot REST: no venue time
    url, ts, body = next(http_lines("BINANCE_FUTURES.http.0.0.gz"))
    (snap,) = binance.parse_rest(url, body, ts, "binance_futures")
    assert isinstance(snap, BookSnapshot)
    assert (snap.symbol, snap.last_update_id, snap.ts_event, snap.bids[0]) == (
        "SUSHI-USDT", 600859605926, 1626992741261000000, (7.611, 6.0))


def test_samples_hftbacktest() -> None:
    lines = hft_lines("spot_ethusdt_20240808.gz")
    ts, raw = next(lines)
    assert binance.parse_message(raw, ts) == BookTop("binance", "ETH-USDT", 0, 1723161254024619568,
                                                     2683.8, 3.0292, 2683.81, 31.4395, 35346513501)
    trade = next(binance.parse_trade(r, t) for t, r in lines if b"@trade" in r)
    assert trade == Trade("binance", "ETH-USDT", 1723161255611000000, 1723161254340863867, 2683.8, 0.002, "sell",
                          "1520538925")
    ts, raw = next(hft_lines("spot_btcusdt_20230405.dat.gz"))  # µs receipt times
    assert binance.parse_message(raw, ts) == Trade("binance", "BTC-USDT", 1680652799999000000, 1680652800004107000,
                                                   28165.47, 0.00056, "sell", "3071245454")


# ---- malformed input ----


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"stream":"ethusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"ETHUSDT","U":1,"b":[],"a":[]}}', "`u`"),
        (b'{"stream":"ethusdt@trade","data":{"e":"trade","s":"ETHUSDT","t":1,"p":"x","q":"1","T":1,"m":true}}', "p"),
        (b'{"e":"trade","s":"ETHUSDT","t":1,"p":"-1","q":"1","T":1,"m":true}', ">"),
        (b'{"e":"depthUpdate","E":1,"s":"ETHUSDT","U":1,"u":2,"b":[["1","nan"]],"a":[]}', "b[0][1]"),
        (b'{"e":"depthUpdate","E":1,"s":"ETHUSDT","U":1,"u":2,"b":[["1"]],"a":[]}', "b[0]"),
        (b'{"stream":"ethusdt@depth@100ms","data":{"e":"depthUp', "truncated"),
        (b'{"stream":"ethusdt@depth20@100ms","data":{"lastUpdateId":1,"bids":[],"asks":[]}}', "unsupported"),
        (b'{"e":"markPriceUpdate","E":1,"s":"BTCUSDT"}', "unsupported"),
        (b'{"lastUpdateId":1,"bids":[],"asks":[]}', "symbol"),
        (b'{"e":"trade","s":"ETHXYZ","t":1,"p":"1","q":"1","T":1,"m":true}', "quote"),
        (b'{"e":"kline","E":1,"s":"ETHUSDT","k":{"t":1,"i":"1x","o":"1","h":"1","l":"1","c":"1","v":"1","n":1,'
         b'"x":true,"q":"1","V":"1"}}', "interval"),
        (b"[1, 2]", "not a Binance"),
        ("<<<<<<< HEAD", "not a Binance"),
    ],
)
def test_malformed_input_is_a_parse_error(raw: bytes | str, words: str) -> None:
    with pytest.raises(ParseError) as info:
        binance.parse_message(raw, 1, "binance_futures")
    assert words in info.value.reason
    assert info.value.venue == "binance_futures"
    assert info.value.raw == raw
    assert info.value.symbol in ("", "ETH-USDT", "BTC-USDT", "ETHXYZ")


def test_a_parse_error_names_the_symbol_it_can_see() -> None:
    with pytest.raises(ParseError) as info:
        binance.parse_message(b'{"stream":"btcusd_perp@trade","data":{"e":"trade","s":"BTCUSD_PERP"}}', 1)
    assert info.value.symbol == "BTC-USD-PERP"
    assert info.value.to_dict()["symbol"] == "BTC-USD-PERP"


def test_acknowledgements_are_not_records() -> None:
    assert binance.parse_message(b'{"result":null,"id":1}', 1) is None
    assert binance.parse_frame('{"result":null,"id":1}', 1) == ()


def test_str_and_bytes_and_key_order_give_the_same_record() -> None:
    raw = '{"stream":"ethusdt@bookTicker","data":{"u":5,"s":"ETHUSDT","b":"1.5","B":"2","a":"1.6","A":"3"}}'
    reordered = '{"data":{"s":"ETHUSDT","u":5,"b":"1.5","B":"2","a":"1.6","A":"3"},"stream":"ethusdt@bookTicker"}'
    bare = '{"u":5,"s":"ETHUSDT","b":"1.5","B":"2","a":"1.6","A":"3"}'
    want = BookTop("binance", "ETH-USDT", 0, 9, 1.5, 2.0, 1.6, 3.0, 5)
    assert {binance.parse_message(r, 9) for r in (raw, raw.encode(), reordered, bare)} == {want}
    assert binance.parse_book_ticker(bare, 9) == binance.parse_book_ticker(raw.encode(), 9) == want


# ---- constants, symbols, requests ----


def test_symbols_round_trip() -> None:
    for venue_symbol, symbol in SYMBOLS.items():
        assert binance.to_symbol(venue_symbol) == symbol
        assert binance.from_symbol(symbol) == venue_symbol
    assert binance.to_symbol("DOTUSD_PERP") == "DOT-USD-PERP"  # not DO + TUSD
    assert binance.to_symbol("ethfdusd") == "ETH-FDUSD"
    with pytest.raises(ValueError, match="quote"):
        binance.to_symbol("USDT")


def test_requests() -> None:
    assert binance.stream_url(binance.SPOT, ["ETH-USDT", "BTC-USDT"], ["depth", "book_ticker"]) == (
        "wss://stream.binance.com:9443/stream?streams="
        "ethusdt@depth@100ms/ethusdt@bookTicker/btcusdt@depth@100ms/btcusdt@bookTicker")
    assert orjson.loads(binance.subscribe_message(["BTC-USD-PERP"], ["aggTrade", "kline_1m"], 7)) == {
        "method": "SUBSCRIBE", "params": ["btcusd_perp@aggTrade", "btcusd_perp@kline_1m"], "id": 7}
    assert binance.depth_snapshot_url(binance.SPOT, "ETH-USDT", 5000) == (
        "https://api.binance.com/api/v3/depth?symbol=ETHUSDT&limit=5000")
    assert binance.parse_rest("https://api.binance.com/api/v3/exchangeInfo", b"{}", 1) == ()
    with pytest.raises(ParseError, match="symbol"):
        binance.parse_rest("https://api.binance.com/api/v3/depth?limit=5", b"{}", 1)


# ---- sync rules ----


def _delta(first: int, last: int, prev: int | None = None) -> BookDelta:
    return BookDelta("binance", "ETH-USDT", 0, 0, (), (), first, last, prev)


def _snap(last: int) -> BookSnapshot:
    return BookSnapshot("binance", "ETH-USDT", 0, 0, (), (), last)


def test_spot_rule() -> None:
    rule = binance.new_sync("binance")
    assert rule.reset(_snap(100), None, OrderBook()) is SNAPSHOT
    assert [rule.check(_delta(f, u)) for f, u in [(90, 100), (95, 99), (102, 105)]] == [STALE, STALE, GAP]
    assert rule.check(_delta(95, 103)) is APPLIED  # bridges: U <= 101 <= u
    assert [rule.check(_delta(f, u)) for f, u in [(100, 103), (104, 104), (104, 104), (106, 107)]] == [
        STALE, APPLIED, STALE, GAP]
    assert "U == 105" in rule.explain(_delta(106, 107))
    rule.reset(_snap(100), None, OrderBook())
    assert rule.check(_delta(101, 101)) is APPLIED


def test_futures_rule() -> None:
    rule = binance.new_sync("binance_futures")
    assert isinstance(rule, binance.FuturesSync)
    assert isinstance(binance.new_sync("binance_delivery"),
                                                                binance.FuturesSync)
    rule.reset(_snap(100), None, OrderBook())
    assert rule.check(_delta(50, 99, 40)) is STALE
    assert rule.check(_delta(120, 130, 110)) is GAP
    assert rule.check(_delta(90, 100, 80)) is APPLIED  # U <= lastUpdateId <= u
    assert [rule.check(_delta(f, u, p)) for f, u, p in [(105, 110, 100), (105, 110, 100), (120, 130, 111)]] == [
        APPLIED, STALE, GAP]
    assert "pu == 110" in rule.explain(_delta(120, 130, 111))
    assert rule.check(_delta(111, 115, None)) is APPLIED  # no pu: the spot form
    assert isinstance(binance.new_sync("binance_us"), binance.SpotSync)
    assert not isinstance(binance.new_sync("binance_us"), binance.FuturesSync)
