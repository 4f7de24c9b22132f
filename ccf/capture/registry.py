"""Venue dispatch for captures and replays: venue name -> how to parse its frames and keep its books in sync.

A venue module registers a :class:`VenueCodec` under its venue name (``binance``, ``binance_futures``, ...; the
cryptofeed file name lower-cased, e.g. ``KRAKEN.ws.50.0.gz`` -> ``kraken``). Readers then turn that venue's frames
into records. (Book sync rules live in :mod:`ccf.venues.registry`.) Venues without a codec still come out of the
readers, as :class:`~ccf.capture.readers.RawFrame` s.

``parse_frame`` and ``parse_rest`` return a sequence of :data:`Parsed`: a record, or ``(record, extra)`` when the
book rule needs more than the record (Kraken and OKX hand over the level text for their checksums); ``extra`` is
passed to :meth:`ccf.book.SymbolBook.on_delta` / ``on_snapshot`` as ``raw``.

Some venues need the connection to read a frame: a Bybit v5 message does not say whether it came from the spot or
the linear socket, only the URL does. Such a codec has ``for_url``: given the connection URL (a cryptofeed capture's
first line, a recording's header) it returns the codec for that connection, or ``None`` for a URL it cannot parse
(Bybit's legacy v2 sockets), whose frames then stay raw.

>>> sorted(v for v in VENUES if v.startswith("binance"))
['binance', 'binance_delivery', 'binance_futures', 'binance_us']
>>> VENUES["binance_futures"].to_symbol("BTCUSDT")
'BTC-USDT'
>>> sorted(VENUES)[4:], VENUES["kraken"].to_symbol("XBT/CHF")
(['bybit', 'coinbase', 'kraken', 'okx', 'synthetic'], 'BTC-CHF')
>>> VENUES["bybit"].for_url("wss://stream.bybit.com/v5/public/linear").to_symbol("BANDUSDT")
'BAND-USDT-PERP'
>>> VENUES["bybit"].for_url("wss://stream.bybit.com/realtime_public") is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeAlias

from ccf.schemas import MarketRecord
from ccf.venues import binance, bybit, coinbase, kraken, okx

Parsed: TypeAlias = MarketRecord | tuple[MarketRecord, object]


class VenueCodec(NamedTuple):
    """What the capture tools need from one venue."""

    parse_frame: Callable[[bytes | str, int], Sequence[Parsed]]
    """A websocket frame and its receipt time (ns) -> records (``()`` for acknowledgements); raises ParseError."""
    parse_rest: Callable[[str, bytes | str, int], Sequence[Parsed]]
    """A REST URL, its response body and receipt time -> records (a depth snapshot, or ``()``)."""
    to_symbol: Callable[[str], str]
    """The venue's symbol text -> ``BASE-QUOTE``."""
    for_url: Callable[[str], VenueCodec | None] | None = None
    """The codec of one connection URL (``None``: frames of that URL cannot be parsed); ``None`` when the URL does
    not matter."""


def _binance(venue: str) -> VenueCodec:
    return VenueCodec(
        parse_frame=lambda raw, ts: binance.parse_frame(raw, ts, venue),
        parse_rest=lambda url, body, ts: binance.parse_rest(url, body, ts, venue),
        to_symbol=binance.to_symbol,
    )


def _no_rest(url: str, body: bytes | str, ts: int) -> Sequence[Parsed]:
    """Venues whose books snapshot in the stream: recorded REST answers (metadata) carry no records."""
    return ()


def _with_text(pairs: Sequence[tuple[MarketRecord, object | None]]) -> list[Parsed]:
    """``(record, level text)`` pairs as :data:`Parsed`: the bare record where there is no text (trades)."""
    return [record if extra is None else (record, extra) for record, extra in pairs]


def _bybit(category: bybit.Category) -> VenueCodec:
    def parse_frame(raw: bytes | str, ts: int) -> Sequence[Parsed]:
        return bybit.parse(raw, ts, category=category)

    def to_symbol(venue_symbol: str) -> str:
        return bybit.to_symbol(venue_symbol, category)

    return VenueCodec(parse_frame, _no_rest, to_symbol, _bybit_for_url)


def _bybit_for_url(url: str) -> VenueCodec | None:
    try:
        return _bybit(bybit.category_of_url(url))
    except ValueError:  # a legacy (v2) socket: no parser, its frames stay raw
        return None


VENUES: dict[str, VenueCodec] = {venue: _binance(venue) for venue in binance.MARKETS}
"""The registry. Add a venue with :func:`register`."""
VENUES.update(
    coinbase=VenueCodec(coinbase.parse, _no_rest, coinbase.to_symbol),
    kraken=VenueCodec(lambda raw, ts: _with_text(kraken.parse_with_text(raw, ts)), _no_rest, kraken.to_symbol),
    okx=VenueCodec(lambda raw, ts: _with_text(okx.parse_with_text(raw, ts)), _no_rest, okx.to_symbol),
    bybit=_bybit("spot"),  # a frame without its connection URL: read as spot
    synthetic=_binance("synthetic"),  # the venue server's synthetic market speaks Binance spot
)


def codec_for(venue: str, url: str = "") -> VenueCodec | None:
    """The codec for ``venue`` 's frames on connection ``url`` (``""``: unknown), or ``None`` when there is none."""
    codec = VENUES.get(venue)
    if codec is not None and url and codec.for_url is not None:
        return codec.for_url(url)
    return codec


def register(venue: str, codec: VenueCodec) -> None:
    """Make ``venue`` 's frames parse into records in every reader and replay (replaces an earlier codec)."""
    VENUES[venue] = codec
