"""Kraken spot, websocket API v1 (array messages).

Data messages are JSON arrays ``[channelID, payload..., channelName, pair]``; events (``heartbeat``,
``systemStatus``, ``subscriptionStatus``) are objects and carry no market data.

* ``book-<depth>``: the first message per pair is a snapshot ``{"as": [...], "bs": [...]}``; then updates
  ``{"a": [...]}`` and/or ``{"b": [...]}`` -- one message may hold two dicts (asks, then bids), and the CRC32
  checksum ``"c"`` sits in the last one. A level is ``[price, volume, timestamp]`` (strings), with a 4th element
  ``"r"`` when Kraken *republishes* a level that came back into the subscribed depth; a volume of 0 deletes the
  level. Levels in one message are applied in order (the last one for a price wins). Kraken sends no delete for
  levels pushed past the subscribed depth: the book must be truncated to that depth after each update
  (:class:`KrakenRule` does). The checksum (:func:`ccf.venues.checksums.kraken_checksum`) covers the top 10 of each
  side, over the venue's strings. Snapshots carry no checksum and no sequence numbers exist.
* ``trade``: ``[[price, volume, time, side, orderType, misc], ...]``; ``side`` ``b``/``s`` is the taker side. v1
  carries no trade id, so ``trade_id`` is ``"<time>-<index in message>"``.
* ``ticker``, ``spread``, ``ohlc``: not used, parsed to ``[]``.

Symbols: ``XBT/CHF`` <-> ``BTC-CHF`` (``XBT`` is BTC, ``XDG`` is DOGE). ``ts_event`` of a book message is the
latest level timestamp in it (for a snapshot: the latest change of any level).

>>> [r.symbol for r in parse('[464,{"a":[["56218.30000","0.10000000","1618678134.5"]],"c":"1"},"book-1000","XBT/CHF"]', 7)]
['BTC-CHF']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

import orjson

from ccf.book import APPLIED, CHECKSUM, SNAPSHOT, STALE, BookEvent, OrderBook
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, Level, MarketRecord, Side, Trade
from ccf.venues.checksums import KRAKEN_DEPTH, BookText, TextLevel, kraken_checksum

VENUE: Final = "kraken"
WS_URL: Final = "wss://ws.kraken.com"
REST_URL: Final = "https://api.kraken.com/0/public"
CHANNELS: Final = {"book": "book", "trades": "trade", "ticker": "ticker"}
"""Our channel name -> Kraken's subscription name."""
BOOK_DEPTHS: Final = (10, 25, 100, 500, 1000)
DEFAULT_DEPTH: Final = 1000
ASSET_ALIASES: Final = {"XBT": "BTC", "XDG": "DOGE"}
"""Kraken asset code -> the common code used in our symbols."""
_ASSET_CODES: Final = {common: code for code, common in ASSET_ALIASES.items()}
TAKER_SIDES: Final[dict[str, Side]] = {"b": "buy", "s": "sell"}


def to_symbol(pair: str) -> str:
    """``XBT/CHF`` -> ``BTC-CHF``.

    >>> to_symbol("XDG/USD"), to_symbol("ETH/CHF")
    ('DOGE-USD', 'ETH-CHF')
    """
    base, sep, quote = pair.partition("/")
    if not sep or not base or not quote:
        raise ParseError(f"pair {pair!r} is not BASE/QUOTE", venue=VENUE, symbol=pair)
    return f"{ASSET_ALIASES.get(base, base)}-{ASSET_ALIASES.get(quote, quote)}".upper()


def to_pair(symbol: str) -> str:
    """``BTC-CHF`` -> ``XBT/CHF`` (the websocket name).

    >>> to_pair("BTC-CHF"), to_pair("DOGE-USD")
    ('XBT/CHF', 'XDG/USD')
    """
    base, _, quote = symbol.upper().partition("-")
    return f"{_ASSET_CODES.get(base, base)}/{_ASSET_CODES.get(quote, quote)}"


def subscribe_message(
    symbols: Sequence[str], channels: Sequence[str], *, depth: int = DEFAULT_DEPTH
) -> list[dict[str, Any]]:
    """The subscribe requests (Kraken v1 takes one subscription name per request).

    >>> subscribe_message(["BTC-CHF"], ["book"], depth=10)
    [{'event': 'subscribe', 'pair': ['XBT/CHF'], 'subscription': {'name': 'book', 'depth': 10}}]
    """
    if depth not in BOOK_DEPTHS:
        raise ValueError(f"kraken book depth must be one of {BOOK_DEPTHS}, not {depth}")
    pairs = [to_pair(s) for s in symbols]
    out: list[dict[str, Any]] = []
    for channel in channels:
        name = CHANNELS[channel]
        subscription: dict[str, Any] = {"name": name, "depth": depth} if name == "book" else {"name": name}
        out.append({"event": "subscribe", "pair": pairs, "subscription": subscription})
    return out


def seconds_to_ns(text: str) -> int:
    """Kraken's ``"1618678133.366461"`` (decimal seconds) -> ns, exactly.

    >>> seconds_to_ns("1618678133.366461")
    1618678133366461000
    """
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


class KrakenBook(NamedTuple):
    """One decoded ``book-*`` message with the venue's text kept (the checksum needs it)."""

    pair: str
    depth: int
    snapshot: bool
    asks: list[TextLevel]
    bids: list[TextLevel]
    checksum: int | None
    ts_event: int


def _levels(raw_levels: Any, latest: int) -> tuple[list[TextLevel], int]:
    out: list[TextLevel] = []
    for level in raw_levels:
        price, volume, ts = level[0], level[1], level[2]
        if not (isinstance(price, str) and isinstance(volume, str) and isinstance(ts, str)):
            raise TypeError(f"level {level!r} is not strings")
        out.append((price, volume))
        latest = max(latest, seconds_to_ns(ts))
    return out, latest


def decode_book(msg: list[Any]) -> KrakenBook:
    """A ``book-*`` array message -> :class:`KrakenBook` (raises KeyError/TypeError/ValueError on bad shapes;
    :func:`parse` turns those into :class:`ParseError`)."""
    channel, pair = msg[-2], msg[-1]
    depth = int(channel.partition("-")[2] or 10)
    asks: list[TextLevel] = []
    bids: list[TextLevel] = []
    checksum: int | None = None
    snapshot = False
    latest = 0
    for part in msg[1:-2]:
        if not isinstance(part, dict):
            raise TypeError(f"book payload {part!r} is not an object")
        if "as" in part or "bs" in part:
            snapshot = True
            asks, latest = _levels(part.get("as", ()), latest)
            bids, latest = _levels(part.get("bs", ()), latest)
            continue
        if "a" in part:
            more, latest = _levels(part["a"], latest)
            asks += more
        if "b" in part:
            more, latest = _levels(part["b"], latest)
            bids += more
        if "c" in part:
            checksum = int(part["c"])
    return KrakenBook(pair, depth, snapshot, asks, bids, checksum, latest)


def _floats(levels: Iterable[TextLevel]) -> tuple[Level, ...]:
    return tuple((float(p), float(s)) for p, s in levels)


def book_record(book: KrakenBook, ts_recv_ns: int) -> BookSnapshot | BookDelta:
    """The normalized record of a decoded book message."""
    symbol = to_symbol(book.pair)
    ts_event = book.ts_event or ts_recv_ns
    if book.snapshot:
        return BookSnapshot(
            venue=VENUE, symbol=symbol, ts_event=ts_event, ts_recv=ts_recv_ns,
            bids=_floats(book.bids), asks=_floats(book.asks),
        )
    return BookDelta(
        venue=VENUE, symbol=symbol, ts_event=ts_event, ts_recv=ts_recv_ns,
        bids=_floats(book.bids), asks=_floats(book.asks), checksum=book.checksum,
    )


def parse_book(msg: list[Any], ts_recv_ns: int) -> list[tuple[MarketRecord, KrakenBook | None]]:
    book = decode_book(msg)
    return [(book_record(book, ts_recv_ns), book)]


def parse_trades(msg: list[Any], ts_recv_ns: int) -> list[tuple[MarketRecord, KrakenBook | None]]:
    symbol = to_symbol(msg[-1])
    out: list[tuple[MarketRecord, KrakenBook | None]] = []
    for i, row in enumerate(msg[1]):
        ts_text = row[2]
        trade_id = str(row[6]) if len(row) > 6 else f"{ts_text}-{i}"
        trade = Trade(
            venue=VENUE, symbol=symbol, ts_event=seconds_to_ns(ts_text), ts_recv=ts_recv_ns,
            price=float(row[0]), size=float(row[1]), side=TAKER_SIDES[row[3]], trade_id=trade_id,
        )
        out.append((trade, None))
    return out


def parse_with_text(raw: bytes | str, ts_recv_ns: int) -> list[tuple[MarketRecord, KrakenBook | None]]:
    """Every record in one websocket message, each with what :class:`KrakenRule` needs beside it: the decoded
    :class:`KrakenBook` (the venue's level text) for book records, ``None`` otherwise."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc}", venue=VENUE, raw=raw) from exc
    if isinstance(msg, dict):
        return []  # heartbeat, systemStatus, subscriptionStatus: no market data
    if not isinstance(msg, list) or len(msg) < 4 or not isinstance(msg[-2], str) or not isinstance(msg[-1], str):
        raise ParseError("not a [channelID, payload, channelName, pair] message", venue=VENUE, raw=raw)
    channel, pair = msg[-2], msg[-1]
    try:
        if channel.startswith("book"):
            return parse_book(msg, ts_recv_ns)
        if channel == "trade":
            return parse_trades(msg, ts_recv_ns)
    except ParseError as exc:
        exc.raw = raw
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ParseError(f"bad {channel} message: {exc!r}", venue=VENUE, symbol=pair, raw=raw) from exc
    return []  # ticker, spread, ohlc


def parse(raw: bytes | str, ts_recv_ns: int) -> list[MarketRecord]:
    """Every record in one websocket message; ``[]`` for events and channels we do not use."""
    return [record for record, _ in parse_with_text(raw, ts_recv_ns)]


class KrakenRule:
    """Kraken's :class:`ccf.book.SyncRule`: in-stream snapshot, no sequence ids, CRC32 after every update.

    ``raw`` (from :func:`parse_with_text`) must be the message's :class:`KrakenBook`: the rule keeps the venue's
    level text beside the float book. After each update it trims the book to the subscribed ``depth`` (from the
    snapshot's channel name, ``book-1000``; Kraken sends
    no delete for levels pushed out) and, when the update carries ``"c"``, compares it with the CRC32 of the top 10;
    a mismatch returns ``CHECKSUM`` (the symbol resyncs; other symbols have their own rule and book).
    Deltas received before the snapshot (``ts_recv`` earlier than the snapshot's) are ``STALE``: without sequence ids
    a snapshot sent in the stream supersedes everything buffered before it. ``verified``/``failed`` count checksums.
    """

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        self.depth = depth
        self.text = BookText()
        self.snapshot_recv = 0
        self.verified = 0
        self.failed = 0
        self.last_failure = ""

    def reset(self, snapshot: BookSnapshot, raw: object, book: OrderBook) -> BookEvent:
        decoded = _text_of(raw)
        self.snapshot_recv = snapshot.ts_recv
        self.depth = decoded.depth
        self.text.reset(decoded.bids, decoded.asks)
        book.truncate(self.depth)
        self.text.prune(book, self.depth, 0)
        return SNAPSHOT

    def check(self, delta: BookDelta) -> BookEvent:
        return STALE if delta.ts_recv < self.snapshot_recv else APPLIED

    def after_apply(self, delta: BookDelta, raw: object, book: OrderBook) -> BookEvent:
        text = self.text
        decoded = _text_of(raw)
        text.apply(decoded.bids, decoded.asks)
        if book.bid_count > self.depth or book.ask_count > self.depth:
            book.truncate(self.depth)
            text.prune(book, self.depth)
        if delta.checksum is None:
            return APPLIED
        bids, asks = text.top(book, KRAKEN_DEPTH)
        ours = kraken_checksum(asks, bids)
        if ours == delta.checksum:
            self.verified += 1
            return APPLIED
        self.failed += 1
        self.last_failure = f"checksum {delta.checksum} from kraken, {ours} from our book"
        return CHECKSUM

    def explain(self, delta: BookDelta) -> str:
        return self.last_failure or "kraken book out of sync"


def _text_of(raw: object) -> KrakenBook:
    if not isinstance(raw, KrakenBook):
        raise TypeError(f"KrakenRule needs the KrakenBook from parse_with_text beside each book record, got {raw!r}")
    return raw
