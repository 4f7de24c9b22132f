"""Normalized records written back as the text Binance sends (the venue server's wire side).

Spot combined-stream payloads, field for field as recorded (``shared/data/hftbacktest_binance_raw_ws``):

* ``<sym>@depth@100ms``: ``{"e":"depthUpdate","E":ms,"s":..,"U":first,"u":last,"b":[[p,q],..],"a":[[p,q],..]}``
* ``<sym>@trade``: ``{"e":"trade","E":ms,"s":..,"t":id,"p":..,"q":..,"T":ms,"m":buyer_is_maker,"M":true}``
* ``<sym>@bookTicker``: ``{"u":id,"s":..,"b":..,"B":..,"a":..,"A":..}``
* REST ``/api/v3/depth``: ``{"lastUpdateId":..,"bids":[[p,q],..],"asks":[[p,q],..]}``

USD-M futures (``market="futures"``) add ``T`` and ``pu`` (previous ``u``) to depth updates, ``e``/``E``/``T`` to
bookTicker, ``X`` to trades (and drop ``M``), ``E``/``T`` to the REST snapshot, and print prices with the tick's
decimals instead of spot's eight.

>>> from ccf.schemas import Trade
>>> t = Trade(venue="synthetic", symbol="ETH-USDT", ts_event=1_723_161_255_611_000_000, ts_recv=0,
...           price=2683.8, size=0.002, side="sell", trade_id="1520538925")
>>> trade_payload(t)
'{"e":"trade","E":1723161255611,"s":"ETHUSDT","t":1520538925,"p":"2683.80000000","q":"0.00200000","T":1723161255611,"m":true,"M":true}'
>>> envelope("ethusdt@trade", "{}")
'{"stream":"ethusdt@trade","data":{}}'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal, TypeAlias

import orjson

from ccf.schemas import BookDelta, BookSnapshot, BookTop, Level, MarketRecord, Trade

Market: TypeAlias = Literal["spot", "futures"]

DEPTH_SUFFIX: Final = "@depth@100ms"
TRADE_SUFFIX: Final = "@trade"
TICKER_SUFFIX: Final = "@bookTicker"


def wire_symbol(symbol: str) -> str:
    """``ETH-USDT`` -> ``ETHUSDT`` (Binance's symbol; streams use it lower-cased).

    >>> wire_symbol("ETH-USDT"), stream_names("ETH-USDT")
    ('ETHUSDT', ('ethusdt@depth@100ms', 'ethusdt@trade', 'ethusdt@bookTicker'))
    """
    return symbol.replace("-", "").upper()


def stream_names(symbol: str) -> tuple[str, str, str]:
    """The three streams the server publishes for one symbol: depth, trade, bookTicker."""
    low = wire_symbol(symbol).lower()
    return low + DEPTH_SUFFIX, low + TRADE_SUFFIX, low + TICKER_SUFFIX


def stream_kind(stream: str) -> str:
    """``depth``, ``trade``, ``bookTicker`` or ``other`` from a stream name.

    >>> stream_kind("ethusdt@depth@100ms"), stream_kind("btcusdt@depth@0ms"), stream_kind("ethusdt@bookTicker")
    ('depth', 'depth', 'bookTicker')
    """
    rest = stream.partition("@")[2]
    if rest.startswith("depth"):
        return "depth"
    if rest in ("trade", "bookTicker"):
        return rest
    return "other"


def _num(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def _levels(levels: Iterable[Level], decimals: tuple[int, int]) -> list[list[str]]:
    pd, sd = decimals
    return [[f"{p:.{pd}f}", f"{q:.{sd}f}"] for p, q in levels]


def _ms(ns: int) -> int:
    return ns // 1_000_000


class WireWriter:
    """Turns records of one market into ``(stream, payload text)``; remembers the last ``u`` per symbol for ``pu``.

    ``decimals`` is ``(price, size)`` digits after the point: spot always prints 8, futures its grid's.
    """

    def __init__(self, market: Market = "spot", decimals: tuple[int, int] | None = None) -> None:
        self.market = market
        self.decimals = decimals or ((8, 8) if market == "spot" else (2, 3))
        self._last_u: dict[str, int] = {}

    def write(self, record: MarketRecord) -> tuple[str, str] | None:
        """The stream and payload of one record; ``None`` for a snapshot (Binance serves those over REST only)."""
        if isinstance(record, BookDelta):
            depth, _, _ = stream_names(record.symbol)
            return depth, self.depth_payload(record)
        if isinstance(record, Trade):
            return stream_names(record.symbol)[1], trade_payload(record, self.market, self.decimals)
        if isinstance(record, BookTop):
            return stream_names(record.symbol)[2], ticker_payload(record, self.market, self.decimals)
        return None

    def depth_payload(self, delta: BookDelta) -> str:
        sym = wire_symbol(delta.symbol)
        body: dict[str, object] = {"e": "depthUpdate", "E": _ms(delta.ts_event)}
        if self.market == "futures":
            body["T"] = _ms(delta.ts_event)
        body["s"] = sym
        body["U"] = delta.first_update_id
        body["u"] = delta.last_update_id
        if self.market == "futures":
            prev = delta.prev_update_id
            body["pu"] = prev if prev is not None else self._last_u.get(sym, delta.first_update_id - 1)
        self._last_u[sym] = delta.last_update_id
        body["b"] = _levels(delta.bids, self.decimals)
        body["a"] = _levels(delta.asks, self.decimals)
        return orjson.dumps(body).decode()


def trade_payload(trade: Trade, market: Market = "spot", decimals: tuple[int, int] = (8, 8)) -> str:
    pd, sd = decimals
    ms = _ms(trade.ts_event)
    tid = int(trade.trade_id)
    maker = trade.side == "sell"  # the buyer is the maker when the taker sells
    p, q, s = _num(trade.price, pd), _num(trade.size, sd), wire_symbol(trade.symbol)
    if market == "futures":
        body: dict[str, object] = {"e": "trade", "E": ms, "T": ms, "s": s, "t": tid, "p": p, "q": q, "X": "MARKET"}
        body["m"] = maker
    else:
        body = {"e": "trade", "E": ms, "s": s, "t": tid, "p": p, "q": q, "T": ms, "m": maker, "M": True}
    return orjson.dumps(body).decode()


def ticker_payload(top: BookTop, market: Market = "spot", decimals: tuple[int, int] = (8, 8)) -> str:
    pd, sd = decimals
    body: dict[str, object] = {"e": "bookTicker"} if market == "futures" else {}
    body.update(
        u=top.update_id,
        s=wire_symbol(top.symbol),
        b=_num(top.bid_price, pd),
        B=_num(top.bid_size, sd),
        a=_num(top.ask_price, pd),
        A=_num(top.ask_size, sd),
    )
    if market == "futures":
        body["T"] = body["E"] = _ms(top.ts_event)
    return orjson.dumps(body).decode()


def envelope(stream: str, payload: str) -> str:
    """A combined-stream message: ``{"stream":..,"data":..}`` around a payload (text kept as is)."""
    return '{"stream":' + orjson.dumps(stream).decode() + ',"data":' + payload + "}"


def rest_depth(
    snapshot: BookSnapshot, limit: int, market: Market = "spot", decimals: tuple[int, int] = (8, 8)
) -> bytes:
    """The REST depth answer for a snapshot, top ``limit`` levels per side."""
    body: dict[str, object] = {"lastUpdateId": snapshot.last_update_id}
    if market == "futures":
        body["E"] = body["T"] = _ms(snapshot.ts_event)
    body["bids"] = _levels(snapshot.bids[:limit], decimals)
    body["asks"] = _levels(snapshot.asks[:limit], decimals)
    return orjson.dumps(body)


TIME_FIELDS: Final = ("E", "T")
"""Event and transaction times (ms) of depth, trade, aggTrade, bookTicker (futures), kline and REST snapshots."""
KLINE_TIME_FIELDS: Final = ("t", "T")
"""A kline's open and close times, inside its ``k``."""


def _shift(data: object, offset_ms: int) -> bool:
    if not isinstance(data, dict):
        return False
    changed = False
    for key in TIME_FIELDS:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            data[key] = value + offset_ms
            changed = True
    kline = data.get("k")
    if isinstance(kline, dict):
        for key in KLINE_TIME_FIELDS:
            value = kline.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                kline[key] = value + offset_ms
                changed = True
    return changed


def shift_times(text: str, offset_ms: int) -> str:
    """A combined-stream message with every time field of its ``data`` moved by ``offset_ms`` (text kept otherwise).

    >>> shift_times('{"stream":"x@trade","data":{"e":"trade","E":1000,"p":"1.50","T":999,"m":true}}', 5)
    '{"stream":"x@trade","data":{"e":"trade","E":1005,"p":"1.50","T":1004,"m":true}}'
    >>> shift_times('{"stream":"x@bookTicker","data":{"u":1,"b":"1.0"}}', 5)  # spot bookTicker: no time, as is
    '{"stream":"x@bookTicker","data":{"u":1,"b":"1.0"}}'
    """
    if not offset_ms:
        return text
    msg = orjson.loads(text)
    if not _shift(msg.get("data") if isinstance(msg, dict) else None, offset_ms):
        return text
    return orjson.dumps(msg).decode()


def shift_rest_times(body: bytes, offset_ms: int) -> bytes:
    """A REST depth answer with ``E``/``T`` moved by ``offset_ms`` (spot snapshots have none: unchanged).

    >>> shift_rest_times(b'{"lastUpdateId":7,"E":10,"T":9,"bids":[],"asks":[]}', -9)
    b'{"lastUpdateId":7,"E":1,"T":0,"bids":[],"asks":[]}'
    """
    if not offset_ms:
        return body
    msg = orjson.loads(body)
    return orjson.dumps(msg) if _shift(msg, offset_ms) else body
