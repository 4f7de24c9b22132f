"""Binance spot, Binance.US, USD-M and COIN-M futures: constants, raw message shapes, parsers and book sync rules.

Venue names: ``binance`` (spot), ``binance_us``, ``binance_futures`` (USD-M), ``binance_delivery`` (COIN-M).
Symbols: ``ETHUSDT`` <-> ``ETH-USDT`` (split at a known quote asset), ``BTCUSD_PERP`` <-> ``BTC-USD-PERP``.
Times: Binance milliseconds -> ns. ``ts_event`` is ``T`` (transaction time) when the message has it, else ``E``;
spot ``bookTicker`` and spot REST snapshots carry no time, so their ``ts_event`` is
:data:`~ccf.schemas.NO_VENUE_TIME` here and :class:`ccf.venues.event_time.EventTimes` gives them venue time
(the depth update they bridge or hold) in every path: never the receipt time.

Parsing uses typed :mod:`msgspec` structs in lax mode, which turn the price and size *strings* into floats in C:
on the ETHUSDT capture a 42-level ``depthUpdate`` takes about 3 µs against 8 µs for ``orjson.loads`` plus
``float()`` per string, with identical floats (``tests/unit/test_binance.py`` checks every captured level).
Prices must be finite and > 0, sizes finite and >= 0. Malformed input raises :class:`~ccf.errors.ParseError`.

>>> r = parse_message(b'{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":7,'
...                   b'"p":"2500.01","q":"0.5","T":1723161254000,"m":true}}', 5)
>>> r.symbol, r.price, r.size, r.side, r.trade_id, r.ts_event
('ETH-USDT', 2500.01, 0.5, 'sell', '7', 1723161254000000000)
>>> to_symbol("AAVEUPUSDT"), to_symbol("BTCUSD_PERP"), from_symbol("BTC-USD-PERP")
('AAVEUP-USDT', 'BTC-USD-PERP', 'BTCUSD_PERP')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Annotated, Any, Final, Generic, NamedTuple, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import msgspec
import orjson

from ccf.errors import ParseError
from ccf.schemas import NO_VENUE_TIME, BookDelta, BookSnapshot, BookTop, Kline, MarketRecord, Trade

logger = logging.getLogger(__name__)


class Market(NamedTuple):
    """One Binance market: where to connect and which sync rule its depth stream follows."""

    venue: str
    ws_url: str
    rest_url: str
    depth_path: str
    futures: bool


SPOT: Final = Market("binance", "wss://stream.binance.com:9443/stream", "https://api.binance.com", "/api/v3/depth",
                     False)
US: Final = Market("binance_us", "wss://stream.binance.us:9443/stream", "https://api.binance.us", "/api/v3/depth",
                   False)
USDM: Final = Market("binance_futures", "wss://fstream.binance.com/stream", "https://fapi.binance.com",
                     "/fapi/v1/depth", True)
COINM: Final = Market("binance_delivery", "wss://dstream.binance.com/stream", "https://dapi.binance.com",
                      "/dapi/v1/depth", True)
MARKETS: Final = {m.venue: m for m in (SPOT, US, USDM, COINM)}

CHANNELS: Final = {
    "depth": "depth@100ms",
    "trade": "trade",
    "agg_trade": "aggTrade",
    "book_ticker": "bookTicker",
    "kline_1m": "kline_1m",
}
"""Our channel names -> Binance stream suffixes (Binance's own suffixes are accepted as they are)."""

QUOTE_ASSETS: Final = (
    "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USDP", "DAI", "UST", "USD", "BTC", "ETH", "BNB", "EUR", "TRY", "RUB",
    "GBP", "BRL", "AUD", "UAH", "NGN", "ZAR", "PLN", "RON", "ARS", "JPY", "MXN", "COP", "CZK", "IDRT", "BIDR",
    "BVND", "XRP", "TRX", "DOGE", "DOT", "PAX", "VAI",
)
_QUOTES_LONGEST_FIRST: Final = tuple(sorted(QUOTE_ASSETS, key=len, reverse=True))


@lru_cache(maxsize=4096)
def to_symbol(venue_symbol: str) -> str:
    """``ETHUSDT`` -> ``ETH-USDT``; a contract suffix stays (``ETHUSD_210924`` -> ``ETH-USD-210924``).
    Raises :class:`ValueError` for a symbol that ends in no known quote asset."""
    pair, _, contract = venue_symbol.upper().partition("_")
    quotes = ("USD",) if contract and pair.endswith("USD") else _QUOTES_LONGEST_FIRST  # COIN-M quotes in USD
    for quote in quotes:
        if pair.endswith(quote) and len(pair) > len(quote):
            base = pair[: -len(quote)]
            return f"{base}-{quote}-{contract}" if contract else f"{base}-{quote}"
    raise ValueError(f"no known quote asset at the end of {venue_symbol!r}")


def from_symbol(symbol: str) -> str:
    """``ETH-USDT`` -> ``ETHUSDT``, ``BTC-USD-PERP`` -> ``BTCUSD_PERP``."""
    base, quote, *contract = symbol.upper().split("-")
    return base + quote + "".join("_" + c for c in contract)


def stream_names(symbols: Iterable[str], channels: Iterable[str]) -> list[str]:
    """``["ethusdt@depth@100ms", ...]`` for our symbols and channel names."""
    chans = [CHANNELS.get(c, c) for c in channels]
    return [f"{from_symbol(s).lower()}@{c}" for s in symbols for c in chans]


def subscribe_message(symbols: Iterable[str], channels: Iterable[str], request_id: int = 1) -> bytes:
    """The ``SUBSCRIBE`` request for a websocket connection.

    >>> subscribe_message(["ETH-USDT"], ["depth", "trade"])
    b'{"method":"SUBSCRIBE","params":["ethusdt@depth@100ms","ethusdt@trade"],"id":1}'
    """
    return orjson.dumps({"method": "SUBSCRIBE", "params": stream_names(symbols, channels), "id": request_id})


def stream_url(market: Market, symbols: Iterable[str], channels: Iterable[str]) -> str:
    """A combined-stream URL (messages arrive as ``{"stream": ..., "data": ...}``)."""
    return f"{market.ws_url}?streams={'/'.join(stream_names(symbols, channels))}"


def depth_snapshot_url(market: Market, symbol: str, limit: int = 1000) -> str:
    """The REST depth snapshot URL.

    >>> depth_snapshot_url(USDM, "BTC-USDT")
    'https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000'
    """
    return f"{market.rest_url}{market.depth_path}?symbol={from_symbol(symbol)}&limit={limit}"


# ---- raw message shapes (Binance's own field names) ----

Price = Annotated[float, msgspec.Meta(gt=0.0, lt=1e15)]
Size = Annotated[float, msgspec.Meta(ge=0.0, lt=1e15)]
RawLevels = tuple[tuple[Price, Size], ...]


class DepthUpdate(msgspec.Struct):
    E: int
    s: str
    U: int
    u: int
    b: RawLevels
    a: RawLevels
    pu: int | None = None
    T: int | None = None


class TradeEvent(msgspec.Struct):
    s: str
    t: int
    p: Price
    q: Size
    T: int
    m: bool


class AggTradeEvent(msgspec.Struct):
    s: str
    a: int
    p: Price
    q: Size
    T: int
    m: bool


class BookTicker(msgspec.Struct):
    s: str
    u: int
    b: Size
    B: Size
    a: Size
    A: Size
    E: int | None = None
    T: int | None = None


class KlineBar(msgspec.Struct):
    t: int
    i: str
    o: Price
    h: Price
    low: Price = msgspec.field(name="l")
    c: Price
    v: Size
    q: Size
    n: int
    V: Size
    x: bool


class KlineEvent(msgspec.Struct):
    E: int
    s: str
    k: KlineBar


class DepthSnapshot(msgspec.Struct):
    lastUpdateId: int
    bids: RawLevels
    asks: RawLevels
    E: int | None = None
    T: int | None = None


M = TypeVar("M")


class Envelope(msgspec.Struct, Generic[M]):
    stream: str
    data: M


class _Peek(msgspec.Struct):
    stream: str | None = None
    e: str | None = None
    lastUpdateId: int | None = None
    u: int | None = None
    id: int | str | None = None


# ---- records ----

_INTERVAL_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000}


def _delta(m: DepthUpdate, ts_recv: int, venue: str) -> BookDelta:
    return BookDelta(venue=venue, symbol=to_symbol(m.s), ts_event=(m.E if m.T is None else m.T) * 1_000_000,
                     ts_recv=ts_recv, bids=m.b, asks=m.a, first_update_id=m.U, last_update_id=m.u,
                     prev_update_id=m.pu)


def _trade(m: TradeEvent, ts_recv: int, venue: str) -> Trade:
    return Trade(venue=venue, symbol=to_symbol(m.s), ts_event=m.T * 1_000_000, ts_recv=ts_recv, price=m.p,
                 size=m.q, side="sell" if m.m else "buy", trade_id=str(m.t))


def _agg_trade(m: AggTradeEvent, ts_recv: int, venue: str) -> Trade:
    return Trade(venue=venue, symbol=to_symbol(m.s), ts_event=m.T * 1_000_000, ts_recv=ts_recv, price=m.p,
                 size=m.q, side="sell" if m.m else "buy", trade_id=f"a{m.a}")


def _book_top(m: BookTicker, ts_recv: int, venue: str) -> BookTop:
    t = m.T if m.T is not None else m.E
    return BookTop(venue=venue, symbol=to_symbol(m.s), ts_event=NO_VENUE_TIME if t is None else t * 1_000_000,
                   ts_recv=ts_recv, bid_price=m.b, bid_size=m.B, ask_price=m.a, ask_size=m.A, update_id=m.u)


def _kline(m: KlineEvent, ts_recv: int, venue: str) -> Kline:
    k = m.k
    unit = _INTERVAL_S.get(k.i[-1:])
    if unit is None or not k.i[:-1].isdigit():
        raise ValueError(f"unknown kline interval {k.i!r}")
    return Kline(venue=venue, symbol=to_symbol(m.s), ts_event=k.t * 1_000_000, ts_recv=ts_recv,
                 interval_s=int(k.i[:-1]) * unit, open=k.o, high=k.h, low=k.low, close=k.c, volume=k.v,
                 quote_volume=k.q, trades=k.n, taker_buy_volume=k.V, closed=k.x)


class _Kind(NamedTuple):
    name: str
    bare: msgspec.json.Decoder[Any]
    enveloped: msgspec.json.Decoder[Any]
    build: Callable[[Any, int, str], MarketRecord]


def _kind(name: str, shape: type[Any], build: Callable[[Any, int, str], MarketRecord]) -> _Kind:
    return _Kind(name, msgspec.json.Decoder(shape, strict=False),
                 msgspec.json.Decoder(Envelope[shape], strict=False), build)  # type: ignore[valid-type]  # runtime generic


_DEPTH: Final = _kind("depthUpdate", DepthUpdate, _delta)
_TRADE: Final = _kind("trade", TradeEvent, _trade)
_AGG_TRADE: Final = _kind("aggTrade", AggTradeEvent, _agg_trade)
_BOOK_TICKER: Final = _kind("bookTicker", BookTicker, _book_top)
_KLINE: Final = _kind("kline", KlineEvent, _kline)
_BY_EVENT: Final = {k.name: k for k in (_DEPTH, _TRADE, _AGG_TRADE, _BOOK_TICKER, _KLINE)}
_BY_EVENT_BYTES: Final = {k.encode(): v for k, v in _BY_EVENT.items()}
_BY_STREAM: Final = {b"depth": _DEPTH, b"trade": _TRADE, b"aggTrade": _AGG_TRADE, b"bookTicker": _BOOK_TICKER}
_PEEK: Final = msgspec.json.Decoder(_Peek)
_SNAPSHOT: Final = msgspec.json.Decoder(DepthSnapshot, strict=False)


def _decode(kind: _Kind, enveloped: bool, raw: bytes | str, ts_recv: int, venue: str) -> MarketRecord:
    try:
        msg = kind.enveloped.decode(raw).data if enveloped else kind.bare.decode(raw)
        return kind.build(msg, ts_recv, venue)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ParseError(f"bad {kind.name}: {exc}", venue=venue, symbol=_symbol_hint(raw), raw=raw) from exc


def _symbol_hint(raw: bytes | str) -> str:
    """The symbol of a message that failed to parse, if it can be seen (for the dead-letter record)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    match = re.search(r'"s":"([A-Za-z0-9_]+)"', text) or re.match(r'\{"stream":"([a-z0-9_]+)@', text)
    if match is None:
        return ""
    try:
        return to_symbol(match[1])
    except ValueError:
        return match[1].upper()


def _head(raw: bytes | str) -> bytes:
    head = raw[:64]
    return head.encode() if isinstance(head, str) else head


def _is_enveloped(raw: bytes | str) -> bool:
    return ('"stream"' in raw) if isinstance(raw, str) else (b'"stream"' in raw)


def parse_message(raw: bytes | str, ts_recv: int, venue: str = "binance") -> MarketRecord | None:
    """Any supported Binance websocket message, combined-stream envelope or bare event, to one record.

    Returns ``None`` for a request acknowledgement (``{"result": null, "id": 1}``); raises
    :class:`~ccf.errors.ParseError` for anything malformed or unsupported (partial depth, mark price...).
    """
    head = _head(raw)
    if head.startswith(b'{"stream":"'):  # the combined stream: the channel is in the stream name
        end = head.find(b'"', 11)
        channel = head[head.find(b"@", 11, end) + 1 : end].partition(b"@")[0]
        kind = _BY_STREAM.get(channel) or (_KLINE if channel.startswith(b"kline_") else None)
        if kind is not None:
            return _decode(kind, True, raw, ts_recv, venue)
    elif head.startswith(b'{"e":"'):
        kind = _BY_EVENT_BYTES.get(head[6 : head.find(b'"', 6)])
        if kind is not None:
            return _decode(kind, False, raw, ts_recv, venue)
    return _parse_slow(raw, ts_recv, venue)


def _parse_slow(raw: bytes | str, ts_recv: int, venue: str) -> MarketRecord | None:
    try:
        peek = _PEEK.decode(raw)
    except msgspec.DecodeError as exc:
        raise ParseError(f"not a Binance message: {exc}", venue=venue, raw=raw) from exc
    if peek.stream is not None:
        channel = peek.stream.partition("@")[2].partition("@")[0]
        kind = _BY_STREAM.get(channel.encode()) or (_KLINE if channel.startswith("kline_") else None)
        if kind is None:
            raise ParseError(f"unsupported stream {peek.stream!r}", venue=venue, raw=raw)
        return _decode(kind, True, raw, ts_recv, venue)
    if peek.e is not None:
        kind = _BY_EVENT.get(peek.e)
        if kind is None:
            raise ParseError(f"unsupported event {peek.e!r}", venue=venue, raw=raw)
        return _decode(kind, False, raw, ts_recv, venue)
    if peek.u is not None:  # spot bookTicker has no "e"
        return _decode(_BOOK_TICKER, False, raw, ts_recv, venue)
    if peek.id is not None:
        return None
    if peek.lastUpdateId is not None:
        raise ParseError("a REST depth snapshot needs its symbol: use parse_depth_snapshot", venue=venue, raw=raw)
    raise ParseError("unknown Binance message", venue=venue, raw=raw)


def parse_depth_update(raw: bytes | str, ts_recv: int, venue: str = "binance") -> BookDelta:
    """A ``depthUpdate`` (``U``, ``u``, futures ``pu``) to a :class:`BookDelta`."""
    return cast(BookDelta, _decode(_DEPTH, _is_enveloped(raw), raw, ts_recv, venue))


def parse_trade(raw: bytes | str, ts_recv: int, venue: str = "binance") -> Trade:
    """A ``trade``; ``m`` (buyer is maker) means the taker sold."""
    return cast(Trade, _decode(_TRADE, _is_enveloped(raw), raw, ts_recv, venue))


def parse_agg_trade(raw: bytes | str, ts_recv: int, venue: str = "binance") -> Trade:
    """An ``aggTrade``; ``trade_id`` is ``"a<aggregate id>"`` so it never collides with a plain trade id."""
    return cast(Trade, _decode(_AGG_TRADE, _is_enveloped(raw), raw, ts_recv, venue))


def parse_book_ticker(raw: bytes | str, ts_recv: int, venue: str = "binance") -> BookTop:
    """A ``bookTicker`` to a :class:`BookTop` (``update_id`` = ``u``, comparable with the depth stream's ``u``)."""
    return cast(BookTop, _decode(_BOOK_TICKER, _is_enveloped(raw), raw, ts_recv, venue))


def parse_kline(raw: bytes | str, ts_recv: int, venue: str = "binance") -> Kline:
    """A ``kline`` event; ``ts_event`` is the bar's open time and ``closed`` is Binance's ``x``."""
    return cast(Kline, _decode(_KLINE, _is_enveloped(raw), raw, ts_recv, venue))


def parse_depth_snapshot(raw: bytes | str, ts_recv: int, venue_symbol: str, venue: str = "binance") -> BookSnapshot:
    """A REST ``/depth`` body. The body names no symbol, so the caller passes the one it asked for (``ETHUSDT``)."""
    try:
        m = _SNAPSHOT.decode(raw)
        symbol = to_symbol(venue_symbol)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ParseError(f"bad depth snapshot: {exc}", venue=venue, symbol=venue_symbol, raw=raw) from exc
    t = m.T if m.T is not None else m.E
    return BookSnapshot(venue=venue, symbol=symbol, ts_event=NO_VENUE_TIME if t is None else t * 1_000_000,
                        ts_recv=ts_recv, bids=m.bids, asks=m.asks, last_update_id=m.lastUpdateId)


def parse_frame(raw: bytes | str, ts_recv: int, venue: str = "binance") -> tuple[MarketRecord, ...]:
    """:func:`parse_message` as a tuple (empty for acknowledgements): the shape every venue's frame parser has."""
    record = parse_message(raw, ts_recv, venue)
    return () if record is None else (record,)


def parse_rest(url: str, body: bytes | str, ts_recv: int, venue: str = "binance") -> tuple[MarketRecord, ...]:
    """A recorded REST response: a ``/depth`` body becomes a snapshot (symbol from the URL); others give ``()``."""
    parts = urlsplit(url)
    if not parts.path.endswith("/depth"):
        return ()
    symbols = parse_qs(parts.query).get("symbol")
    if not symbols:
        raise ParseError(f"no symbol= in {url}", venue=venue, raw=body)
    return (parse_depth_snapshot(body, ts_recv, symbols[0], venue),)


# ---- book sync rules ----


# the book sync rules live in their own module (this one holds the wire side); re-exported for callers
from ccf.venues.binance_sync import FuturesSync, SpotSync, new_sync  # noqa: E402  # after MARKETS, which they use

__all__ = ["FuturesSync", "SpotSync", "new_sync"]
