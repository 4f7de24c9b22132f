"""Venue dispatch for captures and replays: venue name -> how to parse its frames and keep its books in sync.

A venue module registers a :class:`VenueCodec` under its venue name (``binance``, ``binance_futures``, ...; the
cryptofeed file name lower-cased, e.g. ``KRAKEN.ws.50.0.gz`` -> ``kraken``). Readers then turn that venue's frames
into records. (Book sync rules live in :mod:`ccf.venues.registry`.) Venues without a codec still come out of the
readers, as :class:`~ccf.capture.readers.RawFrame` s.

``parse_frame`` and ``parse_rest`` return a sequence of :data:`Parsed`: a record, or ``(record, extra)`` when the
book rule needs more than the record (Kraken and OKX hand over the level text for their checksums); ``extra`` is
passed to :meth:`ccf.book.SymbolBook.on_delta` / ``on_snapshot`` as ``raw``.

>>> sorted(v for v in VENUES if v.startswith("binance"))
['binance', 'binance_delivery', 'binance_futures', 'binance_us']
>>> VENUES["binance_futures"].to_symbol("BTCUSDT")
'BTC-USDT'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeAlias

from ccf.schemas import MarketRecord
from ccf.venues import binance

Parsed: TypeAlias = MarketRecord | tuple[MarketRecord, object]


class VenueCodec(NamedTuple):
    """What the capture tools need from one venue."""

    parse_frame: Callable[[bytes | str, int], Sequence[Parsed]]
    """A websocket frame and its receipt time (ns) -> records (``()`` for acknowledgements); raises ParseError."""
    parse_rest: Callable[[str, bytes | str, int], Sequence[Parsed]]
    """A REST URL, its response body and receipt time -> records (a depth snapshot, or ``()``)."""
    to_symbol: Callable[[str], str]
    """The venue's symbol text -> ``BASE-QUOTE``."""


def _binance(venue: str) -> VenueCodec:
    return VenueCodec(
        parse_frame=lambda raw, ts: binance.parse_frame(raw, ts, venue),
        parse_rest=lambda url, body, ts: binance.parse_rest(url, body, ts, venue),
        to_symbol=binance.to_symbol,
    )


VENUES: dict[str, VenueCodec] = {venue: _binance(venue) for venue in binance.MARKETS}
"""The registry. Add a venue with :func:`register`."""


def register(venue: str, codec: VenueCodec) -> None:
    """Make ``venue`` 's frames parse into records in every reader and replay (replaces an earlier codec)."""
    VENUES[venue] = codec
