"""OKX v5: parsing both recorded captures, CRC32 book checksums, seqId continuity, resync of one symbol."""

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
from ccf.venues import okx
from ccf.venues.checksums import okx_checksum
from tests.unit.venue_captures import Replay, received, sent

MAY = "cryptofeed_sample_data/OKX.ws.1.0.gz"
FEB = "cryptofeed_sample_data/okx_2022-02/OKX.ws.1.0.gz"


@cache
def _records(path: str) -> list[tuple[MarketRecord, okx.OkxBook | None]]:
    return [pair for ts, raw in received(path) for pair in okx.parse_with_text(raw, ts)]


def _replay(path: str, corrupt: tuple[str, int] | None = None) -> tuple[Replay, list[BookEvent | None]]:
    """Replay a capture; the n-th delta of one symbol gets a wrong checksum."""
    replay = Replay("okx", okx.OkxRule)
    events: list[BookEvent | None] = []
    counts: Counter[str] = Counter()
    for record, text in _records(path):
        if corrupt and isinstance(record, BookDelta) and record.symbol == corrupt[0]:
            counts[record.symbol] += 1
            if counts[record.symbol] == corrupt[1] and record.checksum is not None:
                record = msgspec.structs.replace(record, checksum=record.checksum + 1)
            events.append(replay.feed(record, text))
        else:
            replay.feed(record, text)
    return replay, events


def _checksums(replay: Replay) -> tuple[int, int]:
    rules = [sb.rule for sb in replay.books.values()]
    assert all(isinstance(r, okx.OkxRule) for r in rules)
    return sum(r.verified for r in rules), sum(r.failed for r in rules)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("path", "expected"), [
    (MAY, {"BookSnapshot": 3, "BookDelta": 287, "Trade": 74}),
    (FEB, {"BookSnapshot": 20, "BookDelta": 3659, "Trade": 19}),
])
def test_every_message_of_the_captures_parses(path: str, expected: dict[str, int]) -> None:
    assert Counter(type(r).__name__ for r, _ in _records(path)) == expected


def test_subscribe_message_is_what_the_recorder_sent() -> None:
    symbols = ["BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT"]
    assert orjson.loads(sent(MAY)[2]) == okx.subscribe_message(symbols, ["ticker", "trades", "book"])[0]


def test_book_contents() -> None:
    records = [r for r, _ in _records(MAY)]
    snap = next(r for r in records if isinstance(r, BookSnapshot))
    assert isinstance(snap, BookSnapshot)
    assert (snap.symbol, snap.asks[0], snap.asks[1], snap.ts_recv) == (
        "BTC-USD-220527", (30238.8, 2.0), (30249.5, 50.0), 1_652_459_225_507_364_300)
    delta = next(r for r in records if isinstance(r, BookDelta))
    assert delta == BookDelta(
        venue="okx", symbol="BTC-USD-220527", ts_event=1_652_459_225_464_000_000, ts_recv=1_652_459_225_708_481_000,
        bids=((30182.6, 452.0),), asks=((30249.4, 0.0), (30261.0, 4.0), (30310.3, 19.0)), checksum=-914047754,
    )
    option, text = next(r for r in _records(FEB) if r[0].symbol == "ETH-USD-220624-20000-C")
    assert isinstance(option, BookSnapshot)
    assert text is not None
    assert (option.bids, option.asks, option.checksum) == ((), ((0.0025, 20.0), (0.003, 1506.0)), 1483419732)
    assert okx_checksum(text.bids, text.asks) == 1483419732


def test_trade_contents() -> None:
    trades = [r for r, _ in _records(MAY) if isinstance(r, Trade)]
    assert trades[:3] == [
        Trade(venue="okx", symbol="BTC-USD-220527", ts_event=1_652_459_199_958_000_000,
              ts_recv=1_652_459_225_507_075_800, price=30218.8, size=1.0, side="buy", trade_id="7849"),
        Trade(venue="okx", symbol="UNI-USD-SWAP", ts_event=1_652_459_215_150_000_000,
              ts_recv=1_652_459_225_507_172_000, price=5.123, size=100.0, side="sell", trade_id="12883020"),
        Trade(venue="okx", symbol="BTC-USDT", ts_event=1_652_459_224_818_000_000,
              ts_recv=1_652_459_225_507_260_300, price=30236.0, size=0.0002, side="buy", trade_id="338476307"),
    ]
    feb = [r for r, _ in _records(FEB) if isinstance(r, Trade)]
    assert (feb[0].symbol, feb[0].price, feb[0].size, feb[0].side) == ("PROPS-ETH", 0.00000166, 637.04056847, "sell")


@pytest.mark.parametrize("raw", [
    '{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}',
    '{"event":"error","code":"60012","msg":"Invalid request"}',
    "pong",
    '{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","last":"1"}]}',
])
def test_non_data_messages_give_nothing(raw: str) -> None:
    assert okx.parse(raw, 0) == []


@pytest.mark.parametrize(("raw", "symbol"), [
    ('{"arg":{"channel":"books"', ""),
    ("[1, 2]", ""),
    ('{"data":[]}', ""),
    ('{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[["1","2","0","1"]]}]}',
     "BTC-USDT"),
    ('{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[[1,"2"]],"bids":[],"ts":"1"}]}',
     "BTC-USDT"),
    ('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1","px":"1","sz":"1",'
     '"side":"up","ts":"1"}]}', "BTC-USDT"),
])
def test_malformed_messages_raise_parse_error(raw: str, symbol: str) -> None:
    with pytest.raises(ParseError) as info:
        okx.parse(raw, 0)
    assert (info.value.venue, info.value.symbol, info.value.raw) == ("okx", symbol, raw)


@pytest.mark.parametrize(("path", "checksums", "epoch"), [(MAY, 290, 0), (FEB, 3679, 1)])
def test_every_checksum_of_the_captures_verifies_and_books_never_cross(path: str, checksums: int, epoch: int) -> None:
    replay, _ = _replay(path)
    with_checksum = sum(1 for r, _ in _records(path) if isinstance(r, BookSnapshot | BookDelta) and r.checksum is not None)
    assert with_checksum == checksums
    assert _checksums(replay) == (checksums, 0)
    assert replay.events["APPLIED"] + replay.events["SNAPSHOT"] == checksums
    # February: every instrument was subscribed twice and got a second snapshot, which replaces the book (epoch 1)
    assert all(sb.valid and sb.epoch == epoch for sb in replay.books.values())
    sb = replay.books["UNI-USD-SWAP"]
    clone = pickle.loads(pickle.dumps(sb))
    assert clone.rule.text.top(clone.book, 25) == sb.rule.text.top(sb.book, 25)  # type: ignore[attr-defined]


def test_a_corrupted_checksum_resyncs_that_symbol_only() -> None:
    replay, events = _replay(FEB, corrupt=("ELON-USDT", 100))
    assert BookEvent.CHECKSUM in events
    first_bad = events.index(BookEvent.CHECKSUM)
    assert set(events[:first_bad]) <= {BookEvent.APPLIED}
    assert set(events[first_bad + 1 :]) == {BookEvent.BUFFERED}
    elon = replay.books.pop("ELON-USDT")
    assert (elon.valid, elon.epoch, elon.book.best_ask()) == (False, 2, None)
    assert all(sb.valid and sb.epoch == 1 for sb in replay.books.values())
    assert _checksums(replay)[1] == 0


def _book(seq: int, prev: int, bids: str = "", asks: str = "", action: str = "update") -> str:
    return (f'{{"arg":{{"channel":"books","instId":"BTC-USDT"}},"action":"{action}","data":[{{"asks":[{asks}],'
            f'"bids":[{bids}],"ts":"1","seqId":{seq},"prevSeqId":{prev}}}]}}')


def test_seq_ids_are_checked_when_present() -> None:
    replay = Replay("okx", okx.OkxRule)

    def feed(raw: str, ts: int) -> BookEvent | None:
        ((record, text),) = okx.parse_with_text(raw, ts)
        return replay.feed(record, text)

    assert feed(_book(11, 10, bids='["99","1","0","1"]'), 1) is BookEvent.BUFFERED  # before the snapshot
    assert feed(_book(12, 11, bids='["98","1","0","1"]'), 2) is BookEvent.BUFFERED
    snap = _book(11, -1, bids='["99","1","0","1"]', asks='["101","1","0","1"]', action="snapshot")
    assert feed(snap, 3) is BookEvent.SNAPSHOT  # 11 stale, 12 bridges
    sb = replay.books["BTC-USDT"]
    assert (sb.last_update_id, sb.book.top_bids(5)) == (12, [(99.0, 1.0), (98.0, 1.0)])
    assert feed(_book(12, 12), 4) is BookEvent.APPLIED  # no change: OKX repeats the seqId
    assert feed(_book(3, 12, asks='["100","2","0","1"]'), 5) is BookEvent.APPLIED  # seqId reset (maintenance)
    assert feed(_book(3, 2), 6) is BookEvent.STALE
    assert feed(_book(9, 5), 7) is BookEvent.GAP
    assert (sb.valid, sb.epoch) == (False, 1)
