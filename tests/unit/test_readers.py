"""Capture readers on the real files: formats, receipt times, merge order, raw frames, bad lines, klines."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest

from ccf.capture import readers
from ccf.capture.readers import Format, RawFrame, detect_format, read_file, read_records
from ccf.capture.registry import VENUES, VenueCodec
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, BookTop, Kline, Trade
from tests.datafiles import data_dir, data_file

CF = "cryptofeed_sample_data/"
HFT = "hftbacktest_binance_raw_ws/"
KLINES = "binance_spot_btcusdt_1m_klines/"
LOGS = "binance_spot_btcusdt_depth_1000ms_2025-07_small/"
NT = "nautilus_trader_test_data/"


@pytest.mark.parametrize(
    ("relative", "fmt"),
    [
        (CF + "BINANCE.ws.1.0.gz", Format.CRYPTOFEED_WS),
        (CF + "BINANCE.http.0.0.gz", Format.CRYPTOFEED_HTTP),
        (CF + "BINANCE.0.gz", Format.CRYPTOFEED_META),
        (CF + "okx_2022-02/OKX.ws.1.0.gz", Format.CRYPTOFEED_WS),
        (HFT + "spot_ethusdt_20240808.gz", Format.HFTBACKTEST),
        (HFT + "spot_btcusdt_20230405.dat.gz", Format.HFTBACKTEST),
        (KLINES + "BTCUSDT-1m-2025-01-01.csv.gz", Format.BINANCE_KLINE_CSV),
        (LOGS + "btcLog_ad0b3228_with_git_conflict_markers.jsonl", Format.BINANCE_EVENTS),
        (NT + "tardis_binance-futures_BTCUSDT_trades.csv.gz", Format.TARDIS_TRADES),
        (NT + "tardis_binance-futures_BTCUSDT_quotes.csv.gz", Format.TARDIS_QUOTES),
    ],
)
def test_detect_format(relative: str, fmt: Format) -> None:
    assert detect_format(data_file(relative)) is fmt


@pytest.mark.parametrize("relative", [NT + "binance_btcusdt-trades.parquet", NT + "bybit_xrpusdt-ob500.data.zip",
                                      NT + "tardis_deribit_incremental_book_L2_BTC-PERPETUAL.csv"])
def test_unknown_formats_are_refused(relative: str) -> None:
    with pytest.raises(ValueError, match="unknown capture format"):
        detect_format(data_file(relative))


def test_hftbacktest_snapshot_line_gets_market_and_symbol_from_the_streams() -> None:
    items = list(read_file(data_file(HFT + "spot_ethusdt_20240808.gz")))
    assert len(items) == 33618
    snap = items[5]
    assert isinstance(snap, BookSnapshot)
    # a spot REST snapshot has no time: it takes venue time, that of the update it bridges once that is seen, else
    # the latest venue time before it (the recorder's clock ran ~1.3 s behind Binance's: never the receipt time)
    before = [r.ts_event for r in items[:5] if isinstance(r, BookDelta | Trade)]
    bridge = [r.ts_event for r in items[:5] if isinstance(r, BookDelta)
              and r.first_update_id <= snap.last_update_id + 1 <= r.last_update_id]
    assert (snap.venue, snap.symbol, snap.last_update_id, snap.ts_recv, snap.ts_event) == (
        "binance", "ETH-USDT", 35346513512, 1723161254152322667, (bridge or [max(before)])[0])
    assert snap.ts_event == 1723161255408000000
    assert snap.bids[:2] == ((2683.8, 3.0292), (2683.78, 0.002))
    assert (len(snap.bids), len(snap.asks)) == (1000, 1000)
    futures = list(itertools.islice(read_file(data_file(HFT + "usdm_btcusdt_20240718.gz")), 20))
    snap = futures[13]
    assert isinstance(snap, BookSnapshot)
    assert (snap.venue, snap.symbol, snap.last_update_id, snap.ts_event, snap.bids[0]) == (
        "binance_futures", "BTC-USDT", 4984028384061, 1721347022750000000, (63943.9, 46.372))
    assert {r.venue for r in futures if not isinstance(r, ParseError)} == {"binance_futures"}


def test_hftbacktest_microsecond_receipt_times() -> None:
    first = next(read_file(data_file(HFT + "spot_btcusdt_20230405.dat.gz")))
    assert isinstance(first, Trade)
    assert (first.ts_recv, first.trade_id) == (1680652800004107000, "3071245454")


def test_cryptofeed_files_merge_by_receipt_time() -> None:
    paths = readers.cryptofeed_session(data_dir() / CF, "BINANCE")
    assert [p.name for p in paths] == ["BINANCE.ws.1.0.gz", "BINANCE.http.0.0.gz"]
    items = list(read_records(paths))
    assert len(items) == 265 + 4
    times = [i.ts_recv for i in items if not isinstance(i, ParseError | tuple)]
    assert times == sorted(times)
    first_snap = next(n for n, i in enumerate(items) if isinstance(i, BookSnapshot))
    assert items[first_snap - 1].ts_recv == 1633998512063356900  # NKNUSDT diff U=499869750 came first
    assert items[first_snap].ts_recv == 1633998512320639000
    assert items[first_snap + 1].ts_recv == 1633998512564785000
    assert {type(i) for i in items} == {BookDelta, BookTop, Trade, Kline, BookSnapshot}


def test_other_venues_come_out_as_raw_frames() -> None:
    frames = list(read_file(data_file(CF + "BITFINEX.ws.11.0.gz")))  # Bitfinex has no codec
    assert len(frames) == 1693
    first = frames[0]
    assert isinstance(first, RawFrame)
    with gzip.open(data_file(CF + "BITFINEX.ws.11.0.gz"), "rt") as f:
        lines = [line.rstrip("\n") for line in itertools.islice(f, 40)]
    line_no, line = next((n, s) for n, s in enumerate(lines, 1) if s[:1].isdigit())
    assert first.venue == "bitfinex"
    assert first.payload == line.partition(": ")[2]
    assert first.ts_recv == readers.seconds_to_ns(line.partition(": ")[0])
    assert first.source == f"BITFINEX.ws.11.0.gz:{line_no}"
    rest = list(read_file(data_file(CF + "KUCOIN.http.0.0.gz")))
    assert len(rest) == 9
    assert all(isinstance(r, RawFrame) and r.venue == "kucoin" and r.url.startswith("https://") for r in rest)


def test_bad_lines_are_items_not_exceptions(tmp_path: Path) -> None:
    path = tmp_path / "BINANCE.ws.3.0"  # not gzipped
    path.write_text(
        "wss://stream.binance.com:9443/stream?streams=ethusdt@trade <-> 1700000000.5\n"
        'wss://stream.binance.com:9443/stream <- 1700000000.6: {"method":"SUBSCRIBE"}\n'
        '1700000001.25: {"e":"trade","s":"ETHUSDT","t":9,"p":"2000.5","q":"1","T":1700000001000,"m":false}\n'
        "17000x0001.5: {}\n"
        '1700000002: {"e":"trade","s":"ETHUSDT"}\n'
        "garbage\n\n"
    )
    items = list(read_file(path))
    assert items[0] == Trade("binance", "ETH-USDT", 1700000001000000000, 1700000001250000000, 2000.5, 1.0, "buy", "9")
    assert [type(i) for i in items] == [Trade, ParseError, ParseError, ParseError]
    assert all(isinstance(e, ParseError) and f"{path.name}:{n}" in e.reason for e, n in zip(items[1:], (4, 5, 6),
                                                                                             strict=True))
    other = tmp_path / "NEWVENUE.ws.1.0"
    other.write_text("1700000001.25: [1, 2]\n")
    assert list(read_file(other)) == [RawFrame("newvenue", 1700000001250000000, "[1, 2]", "NEWVENUE.ws.1.0:1")]


def test_extras_pass_through_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = BookTop("fake", "A-B", 1, 1, 1.0, 1.0, 2.0, 1.0)
    codec = VenueCodec(parse_frame=lambda raw, ts: [(top, "text")], parse_rest=lambda url, body, ts: [],
                       to_symbol=str.upper)
    monkeypatch.setitem(VENUES, "fake", codec)
    path = tmp_path / "FAKE.ws.1.0"
    path.write_text("1.5: x\n")
    assert list(read_records([path])) == [top]
    assert list(read_records([path], with_extra=True)) == [(top, "text")]


def test_git_conflict_markers_become_parse_errors() -> None:
    items = list(read_file(data_file(LOGS + "btcLog_ad0b3228_with_git_conflict_markers.jsonl")))
    clean = list(read_file(data_file(LOGS + "btcLog_2b61c6f3.jsonl")))
    errors = [i for i in items if isinstance(i, ParseError)]
    assert [e.reason.split(":")[1] for e in errors] == ["1", "70", "71"]
    assert [e.raw for e in errors] == [b"<<<<<<< HEAD", b"=======", b">>>>>>> parent of 4cf6dbb (getting data now)"]
    deltas = [i for i in items if isinstance(i, BookDelta)]
    assert deltas == clean[:68]
    first = clean[0]
    assert isinstance(first, BookDelta)
    assert (first.ts_event, first.ts_recv, first.first_update_id, first.last_update_id, first.bids, first.asks) == (
        1752433492288000000, 1752433492288000000, 2785678340, 2785678342, (),
        ((119055.6, 0.0006), (120151.93, 0.00052)))


def test_klines_cross_the_millisecond_to_microsecond_switch() -> None:
    paths = sorted((data_dir() / KLINES).glob("BTCUSDT-1m-2024-12-*.csv.gz")) + sorted(
        (data_dir() / KLINES).glob("BTCUSDT-1m-2025-01-*.csv.gz"))
    assert len(paths) == 20
    bars = list(read_records(paths))
    assert len(bars) == 28_800
    assert all(isinstance(b, Kline) for b in bars)
    starts = [b.ts_event for b in bars]
    assert {b - a for a, b in itertools.pairwise(starts)} == {60_000_000_000}
    assert starts[0] == 1734825600000000000  # 2024-12-22 00:00 UTC
    new_year = starts.index(1735689600000000000)
    assert new_year == 10 * 1440
    bar = bars[new_year]
    assert bar == Kline("binance", "BTC-USDT", 1735689600000000000, 1735689660000000000, 60, 93576.0, 93610.93,
                        93537.5, 93610.93, 8.21827, 768978.7552247, 2631, 3.95157, True)
    before = bars[new_year - 1]
    assert isinstance(before, Kline)
    assert (before.open, before.close, before.trades, before.ts_recv) == (93600.01, 93576.0, 1062, 1735689600000000000)


def test_tardis_trades_and_quotes() -> None:
    trades = list(read_file(data_file(NT + "tardis_binance-futures_BTCUSDT_trades.csv.gz")))
    assert trades[0] == Trade("binance_futures", "BTC-USDT", 1582329602111000000, 1582329602418379000, 9682.0, 0.132,
                              "buy", "42377944")
    assert [int(t.trade_id) for t in trades if isinstance(t, Trade)] == list(range(42377944, 42387943))
    quotes = list(read_file(data_file(NT + "tardis_binance-futures_BTCUSDT_quotes.csv.gz")))
    assert len(quotes) == 9999
    assert quotes[0] == BookTop("binance_futures", "BTC-USDT", 1582329601096000000, 1582329603502092000, 9681.92,
                                0.67, 9682.0, 0.84)
    bitmex = list(read_file(data_file(NT + "tardis_bitmex_trades_XBTUSD.csv")))
    assert bitmex[0] == Trade("bitmex", "XBTUSD", 1583020803145000000, 1583020803307160000, 8531.5, 2152.0, "sell",
                              "ccc3c1fa-212c-e8b0-1706-9b9c4f3d5ecf")
