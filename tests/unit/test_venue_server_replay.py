"""The replay feed's REST books against the real captures: every served snapshot syncs our own book to the stream.

Derived captures are written to ``tmp_path`` at test time from the shared ones (never copied into the repo): the
snapshot line moved to just after the diff that bridges it, or several diffs later (the case that used to leave the
served book crossed), two USD-M symbols merged into one file set, a capture without a snapshot line.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from ccf.book import APPLIED, SNAPSHOT, STALE, SymbolBook
from ccf.schemas import BookDelta, BookTop
from ccf.venue_server.binance_wire import Market, stream_kind
from ccf.venue_server.feeds import Feed, ReplayFeed, WireEvent
from ccf.venues.binance import parse_depth_snapshot, parse_message
from ccf.venues.registry import new_rule
from tests.captures import Line, move_snapshots, write_capture
from tests.captures import capture_lines as read_lines
from tests.datafiles import data_file

HFT = "hftbacktest_binance_raw_ws/"
SPOT_ETH = (HFT + "spot_ethusdt_20240808.gz", HFT + "spot_ethusdt_20240809.gz")
USDM_BTC = (HFT + "usdm_btcusdt_20240718.gz", HFT + "usdm_btcusdt_20240719.gz")
USDM_ETH_DAY1 = HFT + "usdm_ethusdt_20240718.gz"
NO_SNAPSHOT = HFT + "spot_btcusdt_20230405.dat.gz"
VENUE: dict[Market, str] = {"spot": "binance", "futures": "binance_futures"}

def capture_lines(*files: str) -> list[Line]:
    return read_lines(*(data_file(name) for name in files))


def published(feed: Feed) -> list[WireEvent]:
    """Every event of ``feed``, each handed to :meth:`Feed.published` as the server does."""
    out = []
    for batch in feed.batches():
        for ev in batch:
            feed.published(ev)
            out.append(ev)
    return out


def merged(*parts: list[Line]) -> list[Line]:
    """Several captures of the same minutes as one file set, in receive-time order."""
    return list(heapq.merge(*parts, key=lambda line: int(line[0])))


@dataclass
class Checked:
    snapshots: int = 0
    crossed: int = 0
    not_synced: int = 0
    resyncs: int = 0
    ticker_checks: int = 0
    ticker_mismatches: int = 0
    reference_checks: int = 0
    reference_mismatches: int = 0

    def __post_init__(self) -> None:
        self.tops: dict[int, list[object]] = {}
        """Client tops after each applied diff, by its ``u``."""
        self.tickers: dict[int, object] = {}
        """The venue's bookTicker tops, by ``u``."""

    def compare_tickers(self) -> None:
        """bookTicker comes before the 100 ms diff that holds its update: compare once everything is in."""
        for u, tops in self.tops.items():
            if u in self.tickers:
                self.ticker_checks += len(tops)
                self.ticker_mismatches += sum(top != self.tickers[u] for top in tops)


def _top(sb: SymbolBook, n: int = 20) -> tuple[object, object]:
    return sb.book.top_bids(n), sb.book.top_asks(n)


def check_served_snapshots(feed: Feed, market: Market, every: int = 400, first: int = 60) -> Checked:
    """Replay ``feed``; at the first ``first`` events and every ``every`` events after, ask REST for each symbol
    and start a client there (our own :class:`SymbolBook`, the registry's rule) holding what it subscribed to a
    little before (nothing, or the last 150 events' diffs, alternately); it syncs to the snapshot and follows the
    stream until the next request, its top of book checked against the venue's bookTicker where ``u`` matches.
    A reference book (the plain stream, its capture snapshot at the line) is checked against each synced client."""
    venue = VENUE[market]
    out = Checked()
    recent: deque[tuple[int, BookDelta]] = deque()
    clients: dict[str, SymbolBook] = {}
    refs = {s: SymbolBook(venue, s, new_rule(venue)) for s in feed.symbols}
    owners: list[str | None] = getattr(feed, "snapshot_owners", [])
    snap_no = 0
    n = 0
    for batch in feed.batches():
        for ev in batch:
            n += 1
            feed.published(ev)
            record = _record(ev, market, owners, snap_no)
            if not ev.stream:
                snap_no += 1
            if record is not None:
                _follow(record, clients, refs, out)
                if isinstance(record, BookDelta):
                    recent.append((n, record))
                    while recent[0][0] < n - 150:
                        recent.popleft()
            if n <= first or n % every == 0:
                for sym in feed.symbols:
                    _request(feed, sym, market, n, recent, clients, refs, out)
    out.compare_tickers()
    return out


def _record(ev: WireEvent, market: Market, owners: list[str | None], snap_no: int) -> object:
    if ev.stream:
        return parse_message(ev.text, 0, VENUE[market]) if stream_kind(ev.stream) in ("depth", "bookTicker") else None
    owner = owners[snap_no] if snap_no < len(owners) else None
    return None if owner is None else parse_depth_snapshot(ev.text, 0, owner, VENUE[market])


def _follow(record: object, clients: dict[str, SymbolBook], refs: dict[str, SymbolBook], out: Checked) -> None:
    if isinstance(record, BookTop):
        key = record.update_id * 100 + hash(record.symbol) % 100
        out.tickers[key] = ((record.bid_price, record.bid_size), (record.ask_price, record.ask_size))
        return
    if isinstance(record, BookDelta):
        sym = _wire(record.symbol)
        refs[sym].on_delta(record)
        sb = clients.get(sym)
        if sb is None:
            return
        was_valid = sb.valid
        event = sb.on_delta(record)
        if was_valid and event not in (APPLIED, STALE):
            out.resyncs += 1
        if event is APPLIED:
            _keep_top(out, sb)
    elif record is not None:
        refs[_wire(record.symbol)].on_snapshot(record)  # type: ignore[attr-defined]


def _request(feed: Feed, sym: str, market: Market, n: int, recent: deque[tuple[int, BookDelta]],
             clients: dict[str, SymbolBook], refs: dict[str, SymbolBook], out: Checked) -> None:  # fmt: skip
    body = feed.rest_depth(sym, 1000)
    if body is None:
        return
    venue = VENUE[market]
    out.snapshots += 1
    snap = parse_depth_snapshot(body, 0, sym, venue)
    out.crossed += not (snap.bids and snap.asks and snap.bids[0][0] < snap.asks[0][0])
    sb = SymbolBook(venue, snap.symbol, new_rule(venue))
    if (n // 7) % 2:  # subscribed a while before asking; else just before (no diff since)
        for _, delta in recent:
            if delta.symbol == snap.symbol:
                sb.on_delta(delta)
    if sb.on_snapshot(snap) is not SNAPSHOT:
        out.not_synced += 1
    elif sb.rule.bridged:  # type: ignore[attr-defined]  # a buffered diff was applied on top of the snapshot
        _keep_top(out, sb)
    clients[sym] = sb
    ref = refs[sym]
    if ref.valid and sb.valid:
        out.reference_checks += 1
        out.reference_mismatches += _top(sb) != _top(ref)


def _keep_top(out: Checked, sb: SymbolBook) -> None:
    key = sb.last_update_id * 100 + hash(sb.symbol) % 100
    out.tops.setdefault(key, []).append((sb.book.best_bid(), sb.book.best_ask()))


def _wire(symbol: str) -> str:
    return symbol.replace("-", "")


def run_check(tmp_path: Path, lines: list[Line], market: Market, name: str = "capture.txt") -> Checked:
    return check_served_snapshots(ReplayFeed([write_capture(tmp_path / name, lines)], market), market)


@pytest.mark.parametrize(("files", "market", "after", "tickers"), [
    (SPOT_ETH, "spot", 0, 1056), (SPOT_ETH, "spot", 6, 1056), (USDM_BTC, "futures", None, 625),
    (USDM_BTC, "futures", 6, 625),
], ids=["spot-after-bridge", "spot-6-diffs-later", "usdm-as-recorded", "usdm-6-diffs-later"])  # fmt: skip
def test_every_served_snapshot_syncs_our_book_to_the_venues_top(
    tmp_path: Path, files: tuple[str, ...], market: Market, after: int | None, tickers: int
) -> None:
    lines = capture_lines(*files)
    if after is not None:
        lines = move_snapshots(lines, market, after)
    got = run_check(tmp_path, lines, market)
    print(f"{files[0]} snapshot +{after}: {got}")
    assert got.snapshots > 150
    assert (got.crossed, got.not_synced, got.resyncs) == (0, 0, 0)
    assert got.ticker_checks >= tickers  # every bookTicker whose u is a diff's (tests/unit/test_book_replay.py)
    assert got.ticker_mismatches == 0
    assert got.reference_checks > 100
    assert got.reference_mismatches == 0


def test_two_symbols_in_one_file_set_each_get_their_own_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """USD-M ids are one space for all symbols (both symbols' diffs bridge both snapshots): prices tell them apart."""
    btc = move_snapshots(capture_lines(USDM_BTC[0]), "futures", 4)
    eth = capture_lines(USDM_ETH_DAY1)
    with caplog.at_level("WARNING", "ccf.venue_server"):
        feed = ReplayFeed([write_capture(tmp_path / "two.txt", merged(btc, eth))], "futures")
    assert caplog.records == []  # no guess by "the depth stream seen last"
    assert set(feed.symbols) == {"BTCUSDT", "ETHUSDT"}
    assert sorted(feed.snapshot_owners) == ["BTCUSDT", "ETHUSDT"]  # the assignment under test
    got = check_served_snapshots(feed, "futures")
    assert (got.crossed, got.not_synced, got.resyncs, got.ticker_mismatches, got.reference_mismatches) == (0,) * 5
    assert got.ticker_checks > 400 and got.reference_checks > 100
    assert {s: b.counts["snapshots"] for s, b in feed.books.items()} == {"BTCUSDT": 1, "ETHUSDT": 1}
    assert all(b.counts["gaps"] == 0 and b.exact for b in feed.books.values())


def test_a_capture_without_snapshot_serves_no_book_but_the_whole_stream(tmp_path: Path) -> None:
    feed = ReplayFeed([data_file(NO_SNAPSHOT)], "spot")
    assert feed.symbols == ("BTCUSDT",)
    events = Counter(stream_kind(ev.stream) for ev in published(feed))
    assert feed.rest_depth("BTCUSDT", 1000) is None
    assert events == Counter({"depth": 3929, "trade": 3144, "bookTicker": 8015})


def test_futures_snapshot_id_lies_in_the_next_diff_so_a_client_without_the_last_one_bridges(tmp_path: Path) -> None:
    """USD-M ``u`` values skip ids: the served ``lastUpdateId`` is the next diff's ``U`` (drop rule ``u < id``)."""
    feed = ReplayFeed([write_capture(tmp_path / "u.txt", capture_lines(USDM_BTC[0])[:400])], "futures")
    diffs = [orjson.loads(ev.text)["data"] for ev in published(feed) if ev.stream.endswith("@depth@0ms")]
    served = orjson.loads(feed.rest_depth("BTCUSDT", 5) or b"{}")
    assert served["lastUpdateId"] == diffs[-1]["u"]  # the last diff of the capture: nothing comes after it
    feed = ReplayFeed([write_capture(tmp_path / "u.txt", capture_lines(USDM_BTC[0])[:400])], "futures")
    for batch in feed.batches():
        for ev in batch:
            feed.published(ev)
            if ev.stream.endswith("@depth@0ms") and feed.books["BTCUSDT"].exact:
                data = orjson.loads(ev.text)["data"]
                nxt = next(d for d in diffs if d["pu"] == data["u"])
                served = orjson.loads(feed.rest_depth("BTCUSDT", 5) or b"{}")
                assert served["lastUpdateId"] == nxt["U"] > data["u"] + 1
                assert set(served) == {"lastUpdateId", "E", "T", "bids", "asks"}
                assert (served["E"], served["T"]) == (data["E"], data["T"])
                return
    raise AssertionError("no exact book reached")
