"""OKX v5 public websocket.

Data messages are ``{"arg": {"channel", "instId"}, ["action",] "data": [...]}``; events (``subscribe``,
``unsubscribe``, ``error``) carry ``"event"`` and no data.

* ``books`` (400 levels, 100 ms), ``books-l2-tbt`` (400, tick by tick), ``books50-l2-tbt``: ``action`` ``snapshot``
  then ``update``; ``data[0]`` has ``asks``/``bids`` as ``[price, size, "0", numOrders]`` strings (size 0 deletes;
  the third field is deprecated and always ``"0"``), ``ts`` (ms, string), ``checksum`` (signed 32-bit CRC32 of
  the top 25 levels, :func:`ccf.venues.checksums.okx_checksum`), and, since 2022, ``seqId``/``prevSeqId``
  (``prevSeqId`` of an update equals the previous message's ``seqId``; ``-1`` on a snapshot). A second snapshot
  for an instrument (for instance after a duplicate subscribe) replaces the book.
* ``books5``, ``bbo-tbt``: no ``action``; every message is a full top-N snapshot.
* ``trades``: ``data`` rows with ``instId``, ``tradeId``, ``px``, ``sz``, ``side`` (the taker side), ``ts`` (ms).
* ``tickers`` and anything else: ``[]``.

Symbols: OKX instrument ids are kept as they are. Spot ids are already ``BASE-QUOTE`` (``BTC-USDT``); swaps,
futures and options keep their suffix (``UNI-USD-SWAP``, ``BTC-USD-220527``, ``ETH-USD-220624-20000-C``) so they
never merge with the spot book. Options parse and sync like any other instrument (their books carry checksums too).

>>> [type(r).__name__ for r in parse('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
...      '"tradeId":"1","px":"30236","sz":"0.0002","side":"buy","ts":"1652459224818"}]}', 0)]
['Trade']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import orjson

from ccf.book import APPLIED, CHECKSUM, GAP, SNAPSHOT, STALE, BookEvent, OrderBook
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, MarketRecord, Side, Trade
from ccf.venues.checksums import OKX_DEPTH, BookText, TextLevel, okx_checksum

VENUE: Final = "okx"
WS_URL: Final = "wss://ws.okx.com:8443/ws/v5/public"
REST_URL: Final = "https://www.okx.com"
CHANNELS: Final = {"book": "books", "book_tbt": "books-l2-tbt", "trades": "trades", "ticker": "tickers"}
"""Our channel name -> OKX channel name."""
INCREMENTAL_BOOK_CHANNELS: Final = frozenset({"books", "books-l2-tbt", "books50-l2-tbt"})
SNAPSHOT_BOOK_CHANNELS: Final = frozenset({"books5", "bbo-tbt"})
TAKER_SIDES: Final[dict[str, Side]] = {"buy": "buy", "sell": "sell"}
NO_SEQUENCE: Final = -1
"""``prevSeqId`` of a snapshot."""


def to_symbol(inst_id: str) -> str:
    """OKX instrument ids are kept (upper case).

    >>> to_symbol("BTC-USDT"), to_symbol("UNI-USD-SWAP")
    ('BTC-USDT', 'UNI-USD-SWAP')
    """
    return inst_id.upper()


def subscribe_message(symbols: Sequence[str], channels: Sequence[str]) -> list[dict[str, Any]]:
    """One subscribe request for every channel on every symbol (channel by channel).

    >>> subscribe_message(["BTC-USDT"], ["book", "trades"])[0]["args"]
    [{'channel': 'books', 'instId': 'BTC-USDT'}, {'channel': 'trades', 'instId': 'BTC-USDT'}]
    """
    args = [{"channel": CHANNELS[c], "instId": s} for c in channels for s in symbols]
    return [{"op": "subscribe", "args": args}]


class OkxBook(NamedTuple):
    """One entry of a book message's ``data`` with the venue's text kept (the checksum needs it)."""

    inst_id: str
    snapshot: bool
    asks: list[TextLevel]
    bids: list[TextLevel]
    checksum: int | None
    seq_id: int | None
    prev_seq_id: int | None
    ts_event: int


def _text_levels(rows: Any) -> list[TextLevel]:
    out: list[TextLevel] = []
    for row in rows:
        price, size = row[0], row[1]
        if not (isinstance(price, str) and isinstance(size, str)):
            raise TypeError(f"level {row!r} is not strings")
        out.append((price, size))
    return out


def _optional_int(entry: dict[str, Any], key: str) -> int | None:
    value = entry.get(key)
    return None if value is None else int(value)


def decode_book(msg: dict[str, Any]) -> list[OkxBook]:
    """A book message -> one :class:`OkxBook` per ``data`` entry (raises KeyError/TypeError/ValueError on bad
    shapes; :func:`parse` turns those into :class:`ParseError`)."""
    inst_id = msg["arg"]["instId"]
    snapshot = msg.get("action", "snapshot") == "snapshot"
    return [
        OkxBook(
            inst_id=entry.get("instId", inst_id),
            snapshot=snapshot,
            asks=_text_levels(entry["asks"]),
            bids=_text_levels(entry["bids"]),
            checksum=_optional_int(entry, "checksum"),
            seq_id=_optional_int(entry, "seqId"),
            prev_seq_id=_optional_int(entry, "prevSeqId"),
            ts_event=int(entry["ts"]) * 1_000_000,
        )
        for entry in msg["data"]
    ]


def book_record(book: OkxBook, ts_recv_ns: int) -> BookSnapshot | BookDelta:
    """The normalized record of one decoded book entry. ``seqId`` becomes the update id (0 when absent) and
    ``prevSeqId`` the ``prev_update_id`` of a delta."""
    symbol = to_symbol(book.inst_id)
    bids = tuple((float(p), float(s)) for p, s in book.bids)
    asks = tuple((float(p), float(s)) for p, s in book.asks)
    seq = book.seq_id or 0
    if book.snapshot:
        return BookSnapshot(
            venue=VENUE, symbol=symbol, ts_event=book.ts_event, ts_recv=ts_recv_ns, bids=bids, asks=asks,
            last_update_id=seq, checksum=book.checksum,
        )
    return BookDelta(
        venue=VENUE, symbol=symbol, ts_event=book.ts_event, ts_recv=ts_recv_ns, bids=bids, asks=asks,
        first_update_id=seq, last_update_id=seq, prev_update_id=book.prev_seq_id, checksum=book.checksum,
    )


def parse_book(msg: dict[str, Any], ts_recv_ns: int) -> list[tuple[MarketRecord, OkxBook | None]]:
    return [(book_record(book, ts_recv_ns), book) for book in decode_book(msg)]


def parse_trades(msg: dict[str, Any], ts_recv_ns: int) -> list[tuple[MarketRecord, OkxBook | None]]:
    return [
        (Trade(
            venue=VENUE, symbol=to_symbol(row["instId"]), ts_event=int(row["ts"]) * 1_000_000, ts_recv=ts_recv_ns,
            price=float(row["px"]), size=float(row["sz"]), side=TAKER_SIDES[row["side"]], trade_id=str(row["tradeId"]),
        ), None)
        for row in msg["data"]
    ]


def channel_of(msg: dict[str, Any]) -> str:
    """The OKX channel of a data message (``""`` when it has none)."""
    arg = msg.get("arg")
    channel = arg.get("channel") if isinstance(arg, dict) else None
    return channel if isinstance(channel, str) else ""


def parse_with_text(raw: bytes | str, ts_recv_ns: int) -> list[tuple[MarketRecord, OkxBook | None]]:
    """Every record in one websocket message, each with what :class:`OkxRule` needs beside it: the decoded
    :class:`OkxBook` (the venue's level text) for book records, ``None`` otherwise."""
    if raw == "pong" or raw == b"pong":
        return []
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc}", venue=VENUE, raw=raw) from exc
    if not isinstance(msg, dict):
        raise ParseError("not a JSON object", venue=VENUE, raw=raw)
    if "event" in msg:
        return []  # subscribe / unsubscribe / error / login acknowledgements
    channel = channel_of(msg)
    if not channel:
        raise ParseError("message without event or arg.channel", venue=VENUE, raw=raw)
    try:
        if channel in INCREMENTAL_BOOK_CHANNELS or channel in SNAPSHOT_BOOK_CHANNELS:
            return parse_book(msg, ts_recv_ns)
        if channel == "trades":
            return parse_trades(msg, ts_recv_ns)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        inst = msg["arg"].get("instId")
        raise ParseError(
            f"bad {channel} message: {exc!r}", venue=VENUE, symbol=inst if isinstance(inst, str) else "", raw=raw
        ) from exc
    return []  # tickers and other channels we do not use


def parse(raw: bytes | str, ts_recv_ns: int) -> list[MarketRecord]:
    """Every record in one websocket message; ``[]`` for events and channels we do not use."""
    return [record for record, _ in parse_with_text(raw, ts_recv_ns)]


class OkxRule:
    """OKX's :class:`ccf.book.SyncRule`: in-stream snapshot, ``seqId``/``prevSeqId`` when the feed has them, CRC32
    of the top 25 after every snapshot and update that carries a checksum.

    ``raw`` (from :func:`parse_with_text`) must be the entry's :class:`OkxBook`: the rule keeps the venue's level
    text beside the float book. With sequence ids, a delta whose ``prevSeqId`` is the last ``seqId`` applies (also
    across OKX's maintenance resets, where ``seqId`` drops), one already covered is ``STALE`` and anything else is a
    ``GAP``. Without them (recordings before 2022-04), deltas received before the snapshot are ``STALE`` and the
    checksum is the only check. A mismatch returns ``CHECKSUM``: that symbol resyncs, others are untouched.
    ``verified``/``failed`` count checksums.
    """

    def __init__(self) -> None:
        self.text = BookText()
        self.seq: int | None = None
        self.snapshot_recv = 0
        self.verified = 0
        self.failed = 0
        self.last_failure = ""

    def reset(self, snapshot: BookSnapshot, raw: object, book: OrderBook) -> BookEvent:
        decoded = _text_of(raw)
        self.snapshot_recv = snapshot.ts_recv
        self.seq = decoded.seq_id
        self.text.reset(decoded.bids, decoded.asks)
        return SNAPSHOT if self._verify(snapshot.checksum, book) else CHECKSUM

    def check(self, delta: BookDelta) -> BookEvent:
        prev = delta.prev_update_id
        if self.seq is None or prev is None:
            return STALE if delta.ts_recv < self.snapshot_recv else APPLIED
        if prev == self.seq:
            self.seq = delta.last_update_id
            return APPLIED
        if delta.last_update_id <= self.seq and prev < self.seq:
            return STALE
        return GAP

    def after_apply(self, delta: BookDelta, raw: object, book: OrderBook) -> BookEvent:
        decoded = _text_of(raw)
        self.text.apply(decoded.bids, decoded.asks)
        return APPLIED if self._verify(delta.checksum, book) else CHECKSUM

    def _verify(self, checksum: int | None, book: OrderBook) -> bool:
        if checksum is None:
            return True
        bids, asks = self.text.top(book, OKX_DEPTH)
        ours = okx_checksum(bids, asks)
        if ours == checksum:
            self.verified += 1
            return True
        self.failed += 1
        self.last_failure = f"checksum {checksum} from okx, {ours} from our book"
        return False

    def explain(self, delta: BookDelta) -> str:
        return f"prevSeqId {delta.prev_update_id}, our last seqId {self.seq}"


def _text_of(raw: object) -> OkxBook:
    if not isinstance(raw, OkxBook):
        raise TypeError(f"OkxRule needs the OkxBook from parse_with_text beside each book record, got {raw!r}")
    return raw
