"""Whole captures through the books: the venue's own top of book agrees, snapshots bridge, faults resync exactly."""

from __future__ import annotations

import csv
import functools
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ccf.book import APPLIED, BUFFERED, GAP, SNAPSHOT, STALE, BookEvent, SymbolBook
from ccf.capture.readers import cryptofeed_session, read_file, read_records
from ccf.capture.replay import BookReplayer, BookRow, book_replay, replay, write_book_replay
from ccf.schemas import BookDelta, BookSnapshot, BookTop
from ccf.venues.binance import SpotSync, new_sync
from tests.datafiles import data_dir, data_file

HFT = "hftbacktest_binance_raw_ws/"
SPOT_ETH = [HFT + "spot_ethusdt_20240808.gz", HFT + "spot_ethusdt_20240809.gz"]
USDM_BTC = [HFT + "usdm_btcusdt_20240718.gz", HFT + "usdm_btcusdt_20240719.gz"]


@pytest.mark.parametrize(
    ("files", "checks", "applied", "buffered"),
    [(SPOT_ETH, 1056, 6468, 2), (USDM_BTC, 625, 9016, 6)],
    ids=["spot-ETHUSDT", "usdm-BTCUSDT"],
)
def test_book_top_equals_the_venues_book_ticker(files: list[str], checks: int, applied: int, buffered: int) -> None:
    """At every bookTicker whose ``u`` is the ``u`` of an applied diff, best bid/ask price and size are equal."""
    replayer = BookReplayer()
    after_update: dict[int, tuple[object, object]] = {}
    tickers: list[BookTop] = []
    for record, event, sb in replay(read_records([data_file(f) for f in files]), replayer):
        if isinstance(record, BookTop):
            tickers.append(record)
        elif sb is not None:
            assert not sb.book.is_crossed()
            if event is APPLIED or event is SNAPSHOT:
                assert sb.valid
                after_update[sb.last_update_id] = (sb.book.best_bid(), sb.book.best_ask())
    compared = [t for t in tickers if t.update_id in after_update]
    mismatches = [t for t in compared
                  if after_update[t.update_id] != ((t.bid_price, t.bid_size), (t.ask_price, t.ask_size))]
    assert len(compared) == checks
    assert mismatches == []
    assert replayer.counts == Counter({"APPLIED": applied, "BUFFERED": buffered, "SNAPSHOT": 1})
    (sb,) = replayer.books.values()
    assert (sb.valid, sb.epoch) == (True, 0)


@pytest.mark.parametrize(
    ("name", "sub", "symbols"),
    [("BINANCE", "", 4), ("BINANCE", "binance_2021-04-17", 10), ("BINANCE_US", "", 4), ("BINANCE_FUTURES", "", 4),
     ("BINANCE_DELIVERY", "", 10)],
)
def test_every_cryptofeed_snapshot_bridges_and_nothing_gaps(name: str, sub: str, symbols: int) -> None:
    paths = cryptofeed_session(data_dir() / "cryptofeed_sample_data" / sub, name)
    assert len(paths) == 2
    replayer = BookReplayer()
    events = Counter(event for _, event, _ in replay(read_records(paths), replayer) if event is not None)
    assert events[SNAPSHOT] == symbols
    assert set(events) <= {APPLIED, BUFFERED, STALE, SNAPSHOT}
    assert events[APPLIED] > 100
    assert len(replayer.books) == symbols
    for sb in replayer.books.values():
        assert sb.valid
        assert sb.epoch == 0
        assert sb.rule.bridged, sb  # a diff after the snapshot was applied


# ---- faults injected into the real stream ----


@functools.cache
def book_records(files: tuple[str, ...]) -> list[BookDelta | BookSnapshot]:
    return [r for r in read_records([data_file(f) for f in files]) if isinstance(r, BookDelta | BookSnapshot)]


def feed(sb: SymbolBook, record: BookDelta | BookSnapshot) -> BookEvent:
    return sb.on_delta(record) if isinstance(record, BookDelta) else sb.on_snapshot(record)


def snapshot_of(sb: SymbolBook, at: BookDelta) -> BookSnapshot:
    """What a REST snapshot fetched right after ``at`` would say."""
    book = sb.book
    return BookSnapshot(sb.venue, sb.symbol, at.ts_event, at.ts_recv, tuple(book.top_bids(book.bid_count)),
                        tuple(book.top_asks(book.ask_count)), sb.last_update_id)


@pytest.mark.parametrize("files", [tuple(SPOT_ETH), tuple(USDM_BTC)], ids=["spot", "usdm"])
@pytest.mark.parametrize("fault", ["drop", "duplicate", "reorder"])
def test_faults_resync_to_the_uninterrupted_book(files: tuple[str, ...], fault: str) -> None:
    records = book_records(files)
    venue, symbol = records[0].venue, records[0].symbol
    first = next(i for i, r in enumerate(records) if isinstance(r, BookSnapshot))
    deltas = list(range(first + 1, len(records)))
    k, k1 = deltas[1000], deltas[1001]

    # The snapshot the flow would fetch after the gap: the uninterrupted book after delta 1003.
    base = SymbolBook(venue, symbol, new_sync(venue))
    for i in range(deltas[1003] + 1):
        feed(base, records[i])
    late = records[deltas[1003]]
    assert isinstance(late, BookDelta)
    fetched = snapshot_of(base, late)

    order = list(range(len(records)))
    if fault == "drop":
        order.remove(k)
    elif fault == "duplicate":
        order.insert(k + 1, k)
    else:
        order[k], order[k1] = k1, k
    base = SymbolBook(venue, symbol, new_sync(venue))
    faulty = SymbolBook(venue, symbol, new_sync(venue))
    seen = 0  # how far the uninterrupted book has read
    compared = 0
    events: list[tuple[int, BookEvent]] = []
    for j in order:
        event = feed(faulty, records[j])
        events.append((j, event))
        if j == deltas[1006] and fault != "duplicate":
            event = faulty.on_snapshot(fetched)  # arrives after diffs 1004-1006 were buffered
            events.append((-1, event))
            assert event is SNAPSHOT
            assert (faulty.valid, faulty.epoch, faulty.buffered) == (True, 1, 0)
        while seen <= j:
            feed(base, records[seen])
            seen += 1
        if not faulty.valid:  # before the first snapshot, or between the fault and the fetched snapshot
            assert (faulty.book.best_bid(), faulty.book.best_ask()) == (None, None)
            assert faulty.epoch == (0 if j < first else 1)
        elif seen == j + 1 and (j > deltas[1006] or fault == "duplicate"):
            assert faulty.book == base.book
            assert faulty.last_update_id == base.last_update_id
            compared += 1
    assert compared > 5000
    assert faulty.book.top_bids(20) == base.book.top_bids(20)
    assert faulty.book.top_asks(20) == base.book.top_asks(20)
    after_fault = [e for j, e in events if j in (k, k1)]
    if fault == "duplicate":
        assert after_fault == [APPLIED, STALE, APPLIED]
        assert faulty.epoch == 0
        return
    gap_at = events.index((k1, GAP))
    assert fault == "drop" or events[gap_at + 1] == (k, BUFFERED)  # reordered: the late diff waits
    assert [e for _, e in events[gap_at + 1 : gap_at + 6]].count(BUFFERED) == 5
    assert faulty.epoch == 1
    assert faulty.valid


def test_the_2025_session_gaps_are_found() -> None:
    """The three breaks between recording sessions in ``btcLog_2b61c6f3``, each resynced from an empty book."""
    records = list(read_file(data_file("binance_spot_btcusdt_depth_1000ms_2025-07_small/btcLog_2b61c6f3.jsonl")))
    assert len(records) == 71
    sb = SymbolBook("binance", "BTC-USDT", SpotSync())
    gaps = []
    for n, record in enumerate(records, 1):
        assert isinstance(record, BookDelta)
        if not sb.valid:  # a fresh session: start from an empty book just before this diff
            sb.on_snapshot(BookSnapshot("binance", "BTC-USDT", 0, 0, (), (), record.first_update_id - 1))
        event = sb.on_delta(record)
        if event is GAP:
            gaps.append(n)
            sb.on_snapshot(BookSnapshot("binance", "BTC-USDT", 0, 0, (), (), record.first_update_id - 1))
            assert sb.last_update_id == record.last_update_id  # the buffered diff was applied
        else:
            assert event is APPLIED
    assert gaps == [23, 65, 69]
    assert sb.epoch == 3


def test_book_replay_rows_and_files(tmp_path: Path) -> None:
    paths = [data_file(f) for f in SPOT_ETH]
    rows = list(book_replay(paths))
    assert len(rows) == 1 + 6468
    assert rows[0] == BookRow("binance", "ETH-USDT", 1723161255408000000, 35346513512, 2683.8, 2683.81, 1000, 1000, 0,
                              True, 1723161254152322667, 3.0292, 31.4395, "SNAPSHOT")
    assert {r.event for r in rows[1:]} == {"APPLIED"}
    assert all(r.book_valid and r.epoch == 0 and r.best_bid < r.best_ask for r in rows)
    assert rows[1].update_id == 35346513514
    n = write_book_replay(paths, tmp_path / "book.parquet")
    table = pq.read_table(tmp_path / "book.parquet")
    assert n == table.num_rows == len(rows)
    assert table.column_names == list(BookRow._fields)
    assert table.column("best_ask").to_pylist()[-1] == rows[-1].best_ask
    assert write_book_replay(paths[:1], tmp_path / "book.csv") == 3433
    with (tmp_path / "book.csv").open() as f:
        header, first = next(csv.reader(f)), next(csv.reader(f))
    assert header == list(BookRow._fields)
    assert first[:6] == ["binance", "ETH-USDT", "1723161255408000000", "35346513512", "2683.8", "2683.81"]
