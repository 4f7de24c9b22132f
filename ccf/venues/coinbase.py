"""Coinbase Exchange (the former Pro feed ``ws-feed.pro.coinbase.com``), public websocket.

Messages are JSON objects tagged by ``type``:

* ``snapshot`` (channel ``level2``): ``product_id``, ``bids``/``asks`` as ``[price, size]`` strings, full depth.
  It carries no time and no sequence: ``ts_event`` is our receive time.
* ``l2update``: ``changes`` as ``[side, price, size]`` (``side`` ``buy`` = bid, ``sell`` = ask; size 0 deletes),
  ``time`` ISO-8601 with microseconds. No sequence number either, so a dropped update cannot be detected from the
  feed: the sync rule (:class:`CoinbaseRule`) is *snapshot first* -- updates before the first snapshot are dropped,
  every snapshot replaces the book, and a crossed book is the only consistency check left.
* ``match`` / ``last_match`` (channel ``matches``): ``trade_id``, ``side``, ``price``, ``size``, ``time``,
  ``sequence``. ``side`` is the **maker** order's side, so the taker side is the opposite one.
  ``last_match`` is the latest trade before we subscribed, sent once.
* ``subscriptions``, ``heartbeat``, ``ticker``, ``error``: no records.

Symbols are Coinbase product ids, already ``BASE-QUOTE``.

>>> parse('{"type":"match","trade_id":7,"side":"sell","size":"2","price":"0.79","product_id":"SKL-USD",'
...       '"sequence":1,"time":"2021-04-17T16:43:37.121358Z"}', 0)[0].side
'buy'
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ccf.book import APPLIED, SNAPSHOT, STALE, BookEvent, OrderBook
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, Level, MarketRecord, Side, Trade

VENUE: Final = "coinbase"
WS_URL: Final = "wss://ws-feed.exchange.coinbase.com"
REST_URL: Final = "https://api.exchange.coinbase.com"
CHANNELS: Final = {"book": "level2", "trades": "matches", "ticker": "ticker"}
"""Our channel name -> Coinbase channel name."""
TAKER_SIDE_OF_MAKER: Final[dict[str, Side]] = {"buy": "sell", "sell": "buy"}
BOOK_SIDES: Final = {"buy": 0, "sell": 1}
"""``l2update`` change side -> 0 for bids, 1 for asks."""
IGNORED_TYPES: Final = frozenset({"subscriptions", "heartbeat", "ticker", "status", "received", "open", "done"})


def to_symbol(product_id: str) -> str:
    """Coinbase product ids are already ``BASE-QUOTE``.

    >>> to_symbol("skl-usd")
    'SKL-USD'
    """
    return product_id.upper()


def subscribe_message(symbols: Sequence[str], channels: Sequence[str]) -> list[dict[str, Any]]:
    """One subscribe request for every symbol on every channel.

    >>> subscribe_message(["SKL-USD"], ["book", "trades"])
    [{'type': 'subscribe', 'product_ids': ['SKL-USD'], 'channels': ['level2', 'matches']}]
    """
    return [{"type": "subscribe", "product_ids": list(symbols), "channels": [CHANNELS[c] for c in channels]}]


def iso_to_ns(text: str) -> int:
    """``2021-04-17T16:43:37.075687Z`` -> ns since the epoch, exactly (any number of fraction digits).

    >>> iso_to_ns("2021-04-17T16:43:37.075687Z"), iso_to_ns("1970-01-01T00:00:01Z")
    (1618677817075687000, 1000000000)
    """
    if not text.endswith("Z") or len(text) < 20 or text[10] != "T":
        raise ValueError(f"time {text!r} is not ISO-8601 UTC")
    whole = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
    frac = text[20:-1] if text[19] == "." else ""
    return int(whole.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


def _levels(rows: Any) -> tuple[Level, ...]:
    return tuple((float(price), float(size)) for price, size in rows)


def parse_snapshot(msg: dict[str, Any], ts_recv_ns: int) -> list[MarketRecord]:
    return [BookSnapshot(
        venue=VENUE, symbol=to_symbol(msg["product_id"]), ts_event=ts_recv_ns, ts_recv=ts_recv_ns,
        bids=_levels(msg["bids"]), asks=_levels(msg["asks"]),
    )]


def parse_l2update(msg: dict[str, Any], ts_recv_ns: int) -> list[MarketRecord]:
    sides: tuple[list[Level], list[Level]] = ([], [])
    for side, price, size in msg["changes"]:
        sides[BOOK_SIDES[side]].append((float(price), float(size)))
    return [BookDelta(
        venue=VENUE, symbol=to_symbol(msg["product_id"]), ts_event=iso_to_ns(msg["time"]), ts_recv=ts_recv_ns,
        bids=tuple(sides[0]), asks=tuple(sides[1]),
    )]


def parse_match(msg: dict[str, Any], ts_recv_ns: int) -> list[MarketRecord]:
    return [Trade(
        venue=VENUE, symbol=to_symbol(msg["product_id"]), ts_event=iso_to_ns(msg["time"]), ts_recv=ts_recv_ns,
        price=float(msg["price"]), size=float(msg["size"]), side=TAKER_SIDE_OF_MAKER[msg["side"]],
        trade_id=str(msg["trade_id"]),
    )]


PARSERS: Final = {
    "snapshot": parse_snapshot,
    "l2update": parse_l2update,
    "match": parse_match,
    "last_match": parse_match,
}


def parse(raw: bytes | str, ts_recv_ns: int) -> list[MarketRecord]:
    """Every record in one websocket message; ``[]`` for message types we do not use."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc}", venue=VENUE, raw=raw) from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ParseError("not a typed Coinbase message", venue=VENUE, raw=raw)
    kind = msg["type"]
    parser = PARSERS.get(kind)
    if parser is None:
        if kind in IGNORED_TYPES or kind == "error":
            return []
        raise ParseError(f"unknown message type {kind!r}", venue=VENUE, raw=raw)
    try:
        return parser(msg, ts_recv_ns)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        symbol = msg.get("product_id")
        raise ParseError(
            f"bad {kind} message: {exc!r}", venue=VENUE, symbol=symbol if isinstance(symbol, str) else "", raw=raw
        ) from exc


class CoinbaseRule:
    """Coinbase's :class:`ccf.book.SyncRule` for the ``level2`` channel: *snapshot first*.

    ``level2`` carries no sequence numbers, so a lost update cannot be seen in the feed; the book is trusted from
    each ``snapshot`` on, and only a crossed book (checked by :class:`ccf.book.SymbolBook`) invalidates it. A resync
    means resubscribing, which makes Coinbase send a new snapshot in the stream: every delta buffered before that
    snapshot (received earlier than it) is ``STALE``, every later one applies. No ``raw`` is needed.
    """

    def __init__(self) -> None:
        self.snapshot_recv = 0

    def reset(self, snapshot: BookSnapshot, raw: object, book: OrderBook) -> BookEvent:
        self.snapshot_recv = snapshot.ts_recv
        return SNAPSHOT

    def check(self, delta: BookDelta) -> BookEvent:
        return STALE if delta.ts_recv < self.snapshot_recv else APPLIED

    def after_apply(self, delta: BookDelta, raw: object, book: OrderBook) -> BookEvent:
        return APPLIED

    def explain(self, delta: BookDelta) -> str:
        return "coinbase level2 has no sequence numbers"
