"""Bybit v5 public websocket (one connection per category: spot, linear, inverse).

Data messages are ``{"topic", "type", "ts", "data", ...}``; operation replies (``{"op": "subscribe",
"success": ...}``, pong) carry no data.

* ``orderbook.<depth>.<symbol>``: ``type`` ``snapshot`` or ``delta``; ``data`` ``{s, b, a, u, seq}`` with
  ``b``/``a`` as ``[price, size]`` strings (size 0 deletes), ``u`` the update id, ``seq`` a cross-sequence we do
  not use; ``ts`` (ms) is when the system pushed the book and ``cts`` the matching-engine time of its last change.
  ``ts_event`` is ``ts``: the book *state* is as of that time (level-1 snapshots are re-pushed unchanged every 3 s
  with an old ``cts``). Deltas follow with ``u`` = previous ``u`` + 1; any snapshot replaces the book, and
  ``u == 1`` marks a snapshot sent after a service restart. ``orderbook.1`` sends snapshots only.
* ``publicTrade.<symbol>``: ``data`` rows ``{T, s, S, v, p, i, ...}``, ``S`` (``Buy``/``Sell``) the taker side.
* ``tickers``, ``kline`` and anything else: ``[]``.

Symbols: ``BANDUSDT`` is split at the longest known quote suffix (:data:`QUOTES`) into ``BAND-USDT``. The websocket
category is part of the connection, not of the message, so :func:`parse` takes it: derivatives get a suffix
(:data:`CATEGORY_SUFFIX`: linear/inverse perpetuals ``BAND-USDT-PERP``) so they never merge with the spot book;
symbols that already contain ``-`` (dated futures, options) are kept as they are.

>>> [r.symbol for r in parse('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"T":1,"s":"BTCUSDT",'
...      '"S":"Buy","v":"0.1","p":"100.5","i":"a1"}]}', 0, category="linear")]
['BTC-USDT-PERP']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, TypeAlias

import orjson

from ccf.book import APPLIED, GAP, SNAPSHOT, STALE, BookEvent, OrderBook
from ccf.errors import ParseError
from ccf.schemas import BookDelta, BookSnapshot, Level, MarketRecord, Side, Trade

Category: TypeAlias = Literal["spot", "linear", "inverse"]

VENUE: Final = "bybit"
WS_URLS: Final[dict[Category, str]] = {
    "spot": "wss://stream.bybit.com/v5/public/spot",
    "linear": "wss://stream.bybit.com/v5/public/linear",
    "inverse": "wss://stream.bybit.com/v5/public/inverse",
}
REST_URL: Final = "https://api.bybit.com"
CHANNELS: Final = {"book": "orderbook", "trades": "publicTrade", "ticker": "tickers"}
"""Our channel name -> Bybit topic prefix."""
BOOK_DEPTHS: Final[dict[Category, tuple[int, ...]]] = {
    "spot": (1, 50, 200, 1000),
    "linear": (1, 50, 200, 500, 1000),
    "inverse": (1, 50, 200, 500, 1000),
}
DEFAULT_DEPTH: Final = 50
QUOTES: Final = ("USDT", "USDC", "USDE", "EUR", "BRL", "TRY", "BTC", "ETH", "DAI", "MNT", "USD")
"""Quote assets, tried longest match first when splitting a concatenated symbol."""
CATEGORY_SUFFIX: Final[dict[Category, str]] = {"spot": "", "linear": "-PERP", "inverse": "-PERP"}
TAKER_SIDES: Final[dict[str, Side]] = {"Buy": "buy", "Sell": "sell"}
RESTART_UPDATE_ID: Final = 1
"""A snapshot with this ``u`` follows a restart of Bybit's book service."""

_QUOTES_LONGEST_FIRST: Final = tuple(sorted(QUOTES, key=len, reverse=True))


def category_of_url(ws_url: str) -> Category:
    """The category of a connection from its URL (captures record the URL in their first line).

    >>> category_of_url("wss://stream.bybit.com/v5/public/linear")
    'linear'
    """
    for category, url in WS_URLS.items():
        if ws_url.rstrip("/").endswith(url.rpartition("/")[2]) and "/v5/public/" in ws_url:
            return category
    raise ValueError(f"{ws_url!r} is not a Bybit v5 public websocket URL")


def to_symbol(venue_symbol: str, category: Category = "spot") -> str:
    """``BANDUSDT`` -> ``BAND-USDT`` (spot) or ``BAND-USDT-PERP`` (linear).

    >>> to_symbol("TUSDUSDT"), to_symbol("BANDUSDT", "linear"), to_symbol("BTCUSD", "inverse")
    ('TUSD-USDT', 'BAND-USDT-PERP', 'BTC-USD-PERP')
    """
    if "-" in venue_symbol:
        return venue_symbol.upper()
    upper = venue_symbol.upper()
    for quote in _QUOTES_LONGEST_FIRST:
        if upper.endswith(quote) and len(upper) > len(quote):
            return f"{upper[: -len(quote)]}-{quote}{CATEGORY_SUFFIX[category]}"
    raise ParseError(f"symbol {venue_symbol!r} has no known quote asset", venue=VENUE, symbol=venue_symbol)


def to_venue_symbol(symbol: str) -> str:
    """``BAND-USDT-PERP`` / ``BAND-USDT`` -> ``BANDUSDT``.

    >>> to_venue_symbol("BAND-USDT-PERP")
    'BANDUSDT'
    """
    upper = symbol.upper()
    upper = upper.removesuffix("-PERP")
    base, _, quote = upper.partition("-")
    return base + quote if quote and "-" not in quote else upper


def subscribe_message(
    symbols: Sequence[str], channels: Sequence[str], *, category: Category = "spot", depth: int = DEFAULT_DEPTH
) -> list[dict[str, Any]]:
    """One subscribe request for every symbol on every channel.

    >>> subscribe_message(["BAND-USDT-PERP"], ["book", "trades"], category="linear", depth=1)
    [{'op': 'subscribe', 'args': ['orderbook.1.BANDUSDT', 'publicTrade.BANDUSDT']}]
    """
    if depth not in BOOK_DEPTHS[category]:
        raise ValueError(f"bybit {category} book depth must be one of {BOOK_DEPTHS[category]}, not {depth}")
    args: list[str] = []
    for symbol in symbols:
        venue_symbol = to_venue_symbol(symbol)
        for channel in channels:
            prefix = CHANNELS[channel]
            args.append(f"{prefix}.{depth}.{venue_symbol}" if prefix == "orderbook" else f"{prefix}.{venue_symbol}")
    return [{"op": "subscribe", "args": args}]


def _levels(rows: Any) -> tuple[Level, ...]:
    return tuple((float(price), float(size)) for price, size in rows)


def parse_orderbook(msg: dict[str, Any], ts_recv_ns: int, category: Category = "spot") -> list[MarketRecord]:
    data = msg["data"]
    symbol = to_symbol(data["s"], category)
    ts_event = int(msg["ts"]) * 1_000_000
    update_id = int(data["u"])
    kind = msg["type"]
    if kind == "snapshot":
        return [BookSnapshot(
            venue=VENUE, symbol=symbol, ts_event=ts_event, ts_recv=ts_recv_ns,
            bids=_levels(data["b"]), asks=_levels(data["a"]), last_update_id=update_id,
        )]
    if kind == "delta":
        return [BookDelta(
            venue=VENUE, symbol=symbol, ts_event=ts_event, ts_recv=ts_recv_ns,
            bids=_levels(data["b"]), asks=_levels(data["a"]), first_update_id=update_id, last_update_id=update_id,
        )]
    raise ValueError(f"unknown orderbook message type {kind!r}")


def parse_trades(msg: dict[str, Any], ts_recv_ns: int, category: Category = "spot") -> list[MarketRecord]:
    return [
        Trade(
            venue=VENUE, symbol=to_symbol(row["s"], category), ts_event=int(row["T"]) * 1_000_000,
            ts_recv=ts_recv_ns, price=float(row["p"]), size=float(row["v"]), side=TAKER_SIDES[row["S"]],
            trade_id=str(row["i"]),
        )
        for row in msg["data"]
    ]


def parse(raw: bytes | str, ts_recv_ns: int, *, category: Category = "spot") -> list[MarketRecord]:
    """Every record in one websocket message of a ``category`` connection; ``[]`` for replies and channels we do
    not use."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc}", venue=VENUE, raw=raw) from exc
    if not isinstance(msg, dict):
        raise ParseError("not a JSON object", venue=VENUE, raw=raw)
    topic = msg.get("topic")
    if topic is None:
        if "op" in msg or "success" in msg or "ret_msg" in msg:
            return []  # subscribe / ping replies
        raise ParseError("message without topic or op", venue=VENUE, raw=raw)
    if not isinstance(topic, str):
        raise ParseError("topic is not a string", venue=VENUE, raw=raw)
    prefix = topic.partition(".")[0]
    try:
        if prefix == "orderbook":
            return parse_orderbook(msg, ts_recv_ns, category)
        if prefix == "publicTrade":
            return parse_trades(msg, ts_recv_ns, category)
    except ParseError as exc:
        exc.raw = raw
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ParseError(f"bad {topic} message: {exc!r}", venue=VENUE, symbol=topic.rpartition(".")[2], raw=raw) from exc
    return []


def parse_linear(raw: bytes | str, ts_recv_ns: int) -> list[MarketRecord]:
    """:func:`parse` for a ``linear`` (USDT/USDC perpetual) connection."""
    return parse(raw, ts_recv_ns, category="linear")


class BybitRule:
    """Bybit's :class:`ccf.book.SyncRule`: snapshots come in the stream, deltas follow with ``u`` + 1.

    Every snapshot replaces the book (Bybit re-sends one after a problem on its side, with ``u == 1`` after a
    service restart, and ``orderbook.1`` sends nothing but snapshots). A delta with ``u`` at or below the last one is
    ``STALE`` (it was buffered before the snapshot), ``u == last + 1`` applies, anything else is a ``GAP``.
    Bybit deletes the levels that leave the subscribed depth itself, so no trimming. No ``raw`` is needed.
    """

    def __init__(self) -> None:
        self.last = 0

    def continues(self, snapshot: BookSnapshot) -> bool:
        """A snapshot at or after the last ``u`` carries on the sequence; ``u == 1`` is Bybit restarting."""
        return snapshot.last_update_id >= self.last and snapshot.last_update_id != 1

    def reset(self, snapshot: BookSnapshot, raw: object, book: OrderBook) -> BookEvent:
        self.last = snapshot.last_update_id
        return SNAPSHOT

    def resume(self, last_update_id: int) -> None:
        """Go on as if update ``last_update_id`` was the last applied (a checkpoint of a book in sync)."""
        self.last = last_update_id

    def check(self, delta: BookDelta) -> BookEvent:
        u = delta.last_update_id
        if u <= self.last:
            return STALE
        if u != self.last + 1:
            return GAP
        self.last = u
        return APPLIED

    def after_apply(self, delta: BookDelta, raw: object, book: OrderBook) -> BookEvent:
        return APPLIED

    def explain(self, delta: BookDelta) -> str:
        return f"expected u {self.last + 1}, got {delta.last_update_id}"
