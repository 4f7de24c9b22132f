"""Which venues ``flows.ingest`` and ``ccf record`` connect to, and how: data, not ``if`` s.

A :class:`Link` holds everything the generic code needs about one venue's live feed: the websocket connections for
the chosen symbols and channels, the REST URL of one symbol's book snapshot (``None`` for venues whose snapshots
come in the stream), and the :class:`~ccf.capture.registry.VenueCodec` that parses its frames. The URL bases can be
overridden (``ws_url``, ``rest_url``) so tests and demos point at the local venue server
(:mod:`ccf.venue_server`), which speaks Binance's protocol; ``synthetic`` is that server's synthetic market and
needs both overrides.

>>> link = make_link("binance", ["ETH-USDT"], ["depth", "trade"], ws_url="ws://127.0.0.1:9/stream",
...                  rest_url="http://127.0.0.1:9")
>>> link.connections[0].url
'ws://127.0.0.1:9/stream?streams=ethusdt@depth@100ms/ethusdt@trade'
>>> link.snapshot_url("ETH-USDT")
'http://127.0.0.1:9/api/v3/depth?symbol=ETHUSDT&limit=1000'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from ccf.capture.registry import VENUES, VenueCodec
from ccf.errors import ConfigError
from ccf.venues import binance
from ccf.wsource import WsConnection

BINANCE_CHANNELS: Final = ("depth", "trade", "book_ticker", "kline_1m")
"""What a Binance connection subscribes to unless told otherwise (our channel names, see ``binance.CHANNELS``)."""
SYMBOLS_PER_CONNECTION: Final = 50
"""Binance allows 1024 streams per connection; smaller connections spread over Bytewax workers."""


@dataclass(frozen=True)
class Link:
    """One venue's live feed: its connections, how to snapshot a symbol's book, how to parse its frames."""

    venue: str
    symbols: tuple[str, ...]
    connections: tuple[WsConnection, ...]
    symbols_of: dict[str, tuple[str, ...]]
    """Connection name -> the symbols it carries."""
    codec: VenueCodec
    snapshot_url: Callable[[str], str] | None
    """Symbol -> REST depth snapshot URL; ``None`` when books snapshot in the stream (no REST resync)."""


def _binance_codec(venue: str) -> VenueCodec:
    codec = VENUES.get(venue)
    if codec is None:
        raise ConfigError(f"no codec registered for {venue!r} in ccf.capture.registry")
    return codec


def stream_endpoint(url: str) -> str:
    """The combined-stream endpoint of a server: ``/stream`` is added to a bare ``ws://host:port``.

    >>> stream_endpoint("ws://127.0.0.1:9"), stream_endpoint("wss://stream.binance.com:9443/stream")
    ('ws://127.0.0.1:9/stream', 'wss://stream.binance.com:9443/stream')
    """
    return url.rstrip("/") + "/stream" if urlsplit(url).path in ("", "/") else url


def binance_link(
    market: binance.Market,
    symbols: Sequence[str],
    channels: Sequence[str] | None = None,
    *,
    ws_url: str | None = None,
    rest_url: str | None = None,
    depth_limit: int = 1000,
    per_connection: int = SYMBOLS_PER_CONNECTION,
) -> Link:
    """Combined-stream connections of ``per_connection`` symbols each; REST snapshots of ``depth_limit`` levels."""
    market = market._replace(ws_url=stream_endpoint(ws_url or market.ws_url),
                             rest_url=(rest_url or market.rest_url).rstrip("/"))
    chans = tuple(channels or BINANCE_CHANNELS)
    syms = tuple(symbols)
    groups = [syms[i : i + per_connection] for i in range(0, len(syms), per_connection)]
    conns = tuple(
        WsConnection(market.venue if len(groups) == 1 else f"{market.venue}-{n}", binance.stream_url(market, g, chans))
        for n, g in enumerate(groups)
    )

    def snapshot_url(symbol: str) -> str:
        return binance.depth_snapshot_url(market, symbol, depth_limit)

    symbols_of = {c.name: g for c, g in zip(conns, groups, strict=True)}
    return Link(market.venue, syms, conns, symbols_of, _binance_codec(market.venue), snapshot_url)


MARKETS: Final[dict[str, binance.Market]] = {
    **binance.MARKETS,
    "synthetic": binance.SPOT._replace(venue="synthetic", ws_url="", rest_url=""),
}
"""Venues with a live connector: the Binance markets, and the local venue server's synthetic market."""


def make_link(
    venue: str,
    symbols: Sequence[str],
    channels: Sequence[str] | None = None,
    *,
    ws_url: str | None = None,
    rest_url: str | None = None,
) -> Link:
    """The link for ``venue`` (``CCF_VENUES__SOURCE``); :class:`ConfigError` for a venue without a live connector."""
    market = MARKETS.get(venue)
    if market is None:
        raise ConfigError(
            f"CCF_VENUES__SOURCE={venue}: no live connector (known: {', '.join(sorted(MARKETS))}); "
            "captures of other venues replay through ccf.capture"
        )
    if not (ws_url or market.ws_url) or not (rest_url or market.rest_url):
        raise ConfigError(f"venue {venue!r} has no public URL: give the venue server's ws_url and rest_url "
                          "(CCF_VENUES__WS_URL, CCF_VENUES__REST_URL)")
    if not symbols:
        raise ConfigError("CCF_VENUES__SYMBOLS is empty: nothing to subscribe to")
    return binance_link(market, symbols, channels, ws_url=ws_url, rest_url=rest_url)
