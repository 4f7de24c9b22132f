"""Where the venue server's messages come from: the synthetic market or a capture file.

A feed yields batches of :class:`WireEvent` (combined-stream text plus its time) in order, and answers REST depth
requests with a book consistent with what it has yielded so far.

Capture files are hftbacktest's format: gzip (or plain) text, one ``<local receive ts> <raw json>`` per line, ns in
the 2024 files and µs in ``*.dat.gz`` (told apart by size). One line may be the raw REST snapshot
``{"lastUpdateId":..}``: it is not streamed but kept for REST, and from there on the feed keeps the book (snapshot plus
every depth diff) so that a REST request always gets the current book with the last applied ``u`` as
``lastUpdateId``. Before the snapshot line is reached REST serves the capture's snapshot as is (from the future,
which is what a client fetching it after subscribing would get). The snapshot belongs to the symbol of the depth
stream seen last (hftbacktest records one symbol per file).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import orjson

from ccf.schemas import format_decimal
from ccf.synthetic import SyntheticVenue
from ccf.venue_server.binance_wire import Market, WireWriter, envelope, rest_depth, stream_kind, wire_symbol

logger = logging.getLogger(__name__)


class WireEvent(NamedTuple):
    """One message: when (ns, event or capture time), on which stream, as combined-stream text."""

    ts_ns: int
    stream: str
    text: str


def payload_of(event: WireEvent) -> str:
    """The ``data`` part of a combined-stream message (what a raw ``/ws`` connection gets).

    >>> payload_of(WireEvent(0, "x@trade", '{"stream":"x@trade","data":{"e":"trade"}}'))
    '{"e":"trade"}'
    """
    prefix = '{"stream":' + orjson.dumps(event.stream).decode() + ',"data":'
    if event.text.startswith(prefix) and event.text.endswith("}"):
        return event.text[len(prefix) : -1]
    return orjson.dumps(orjson.loads(event.text)["data"]).decode()


class Feed(Protocol):
    market: Market
    symbols: tuple[str, ...]
    """Wire symbols (``ETHUSDT``)."""

    def batches(self) -> Iterator[list[WireEvent]]:
        """Events in order; an event with ``stream == ""`` is not sent (a capture's REST snapshot line)."""
        ...

    def published(self, event: WireEvent) -> None:
        """Called for every event once it has been handed to the connections (or skipped, if not sent)."""
        ...

    def rest_depth(self, symbol: str, limit: int) -> bytes | None:
        """REST answer for a wire symbol, or ``None`` if the feed has no book for it."""
        ...


class SyntheticFeed:
    """:class:`ccf.synthetic.SyntheticVenue` written as Binance messages, one step per batch."""

    def __init__(self, venue: SyntheticVenue, market: Market = "spot") -> None:
        self.venue = venue
        self.market = market
        decimals = (8, 8)
        if market == "futures":
            specs = venue.specs.values()
            decimals = max(_decimals(s.tick) for s in specs), max(_decimals(s.lot) for s in specs)
        self.writer = WireWriter(market, decimals)
        self.symbols = tuple(wire_symbol(s) for s in venue.symbols)
        self._by_wire = dict(zip(self.symbols, venue.symbols, strict=True))

    def batches(self) -> Iterator[list[WireEvent]]:
        write = self.writer.write
        while True:
            records = self.venue.step()
            if not records:
                return
            batch = []
            for record in records:
                out = write(record)
                if out is not None:
                    stream, payload = out
                    batch.append(WireEvent(record.ts_event, stream, envelope(stream, payload)))
            yield batch

    def published(self, event: WireEvent) -> None:
        """Nothing to do: the venue's book is at most one step ahead of what was sent, which REST may show."""

    def rest_depth(self, symbol: str, limit: int) -> bytes | None:
        name = self._by_wire.get(symbol)
        if name is None:
            return None
        return rest_depth(self.venue.snapshot(name), limit, self.market, self.writer.decimals)


def _decimals(x: float) -> int:
    return len(format_decimal(x).partition(".")[2])


def read_capture(paths: Sequence[Path]) -> Iterator[tuple[int, str]]:
    """``(ts_ns, json text)`` of every line of hftbacktest capture files, in file order."""
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                ts_text, _, text = line.partition(" ")
                try:
                    ts = int(ts_text)
                except ValueError:
                    logger.warning("replay %s:%d: no timestamp, line skipped", path, lineno)
                    continue
                yield (ts * 1000 if ts < 10**17 else ts), text


class _Book:
    """Price text -> size text per side, for the replay's REST answers."""

    def __init__(self, snapshot: dict[str, object]) -> None:
        self.extra = {k: v for k, v in snapshot.items() if k in ("E", "T")}
        self.last_u = int(snapshot["lastUpdateId"])  # type: ignore[call-overload]
        self.bids: dict[str, str] = dict(snapshot["bids"])  # type: ignore[call-overload]
        self.asks: dict[str, str] = dict(snapshot["asks"])  # type: ignore[call-overload]

    def apply(self, data: dict[str, object]) -> None:
        if int(data["u"]) <= self.last_u:  # type: ignore[call-overload]
            return
        for side, key in ((self.bids, "b"), (self.asks, "a")):
            for price, size in data[key]:  # type: ignore[attr-defined]
                if float(size) == 0.0:
                    side.pop(price, None)
                else:
                    side[price] = size
        self.last_u = int(data["u"])  # type: ignore[call-overload]
        if self.extra and "E" in data:  # futures snapshots carry E/T; spot ones do not
            self.extra = {"E": data["E"], "T": data.get("T", data["E"])}

    def rest(self, limit: int) -> bytes:
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))[:limit]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:limit]
        return orjson.dumps({"lastUpdateId": self.last_u, **self.extra, "bids": bids, "asks": asks})


class ReplayFeed:
    """Capture lines as they were received; ``ts_ns`` is the capture's receive time (for pacing)."""

    def __init__(self, paths: Sequence[Path], market: Market = "spot", batch_size: int = 256) -> None:
        self.paths = list(paths)
        self.market = market
        self.batch_size = batch_size
        self.symbols: tuple[str, ...] = ()
        self._capture_snapshots: dict[str, bytes] = {}
        self._books: dict[str, _Book] = {}
        self._last = ""
        self._scan()

    def _scan(self) -> None:
        """Learn the symbols and each symbol's snapshot (served before the replay reaches it)."""
        symbols: list[str] = []
        last = ""
        for _, text in read_capture(self.paths):
            if text.startswith('{"stream"'):
                stream = text[11 : text.index('"', 11)]
                sym = stream.partition("@")[0].upper()
                if sym not in symbols:
                    symbols.append(sym)
                if stream_kind(stream) == "depth":
                    last = sym
            elif text.startswith('{"lastUpdateId"') and last and last not in self._capture_snapshots:
                self._capture_snapshots[last] = text.encode()
        self.symbols = tuple(symbols)
        logger.info("replay %s: symbols %s, snapshots for %s", self.paths, symbols, sorted(self._capture_snapshots))

    def batches(self) -> Iterator[list[WireEvent]]:
        batch: list[WireEvent] = []
        for ts, text in read_capture(self.paths):
            if text.startswith('{"stream":"'):
                batch.append(WireEvent(ts, text[11 : text.index('"', 11)], text))
            elif text.startswith('{"lastUpdateId"'):
                batch.append(WireEvent(ts, "", text))
            else:
                logger.warning("replay: line at ts %d is not a combined-stream message, skipped: %.80s", ts, text)
                continue
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def published(self, event: WireEvent) -> None:
        """Keep the REST book in step with what has been sent."""
        if not event.stream:
            if self._last:
                self._books[self._last] = _Book(orjson.loads(event.text))
            return
        if stream_kind(event.stream) != "depth":
            return
        self._last = event.stream.partition("@")[0].upper()
        book = self._books.get(self._last)
        if book is not None:
            book.apply(orjson.loads(event.text)["data"])

    def rest_depth(self, symbol: str, limit: int) -> bytes | None:
        book = self._books.get(symbol)
        if book is not None:
            return book.rest(limit)
        raw = self._capture_snapshots.get(symbol)
        if raw is None:
            return None
        if limit >= 1000:
            return raw
        return _Book(orjson.loads(raw)).rest(limit)
