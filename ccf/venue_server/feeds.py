"""Where the venue server's messages come from: the synthetic market or a capture file.

A feed yields batches of :class:`WireEvent` (combined-stream text plus its time) in order, and answers REST depth
requests with a book consistent with what it has yielded so far.

Capture files are hftbacktest's format: gzip (or plain) text, one ``<local receive ts> <raw json>`` per line, ns in
the 2024 files and µs in ``*.dat.gz`` (told apart by size). A line may be a raw REST snapshot ``{"lastUpdateId":..}``:
it is not streamed; it syncs that symbol's REST book the way a client would, diffs buffered before it included
(:mod:`ccf.venue_server.replay_book` says what REST serves before, at and after it, and without one). Several symbols
and several snapshot lines per file set are fine.
"""

from __future__ import annotations

import gzip
import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import orjson

from ccf.schemas import BookDelta, format_decimal
from ccf.synthetic import SyntheticVenue
from ccf.venue_server.binance_wire import Market, WireWriter, envelope, rest_depth, stream_kind, wire_symbol
from ccf.venue_server.replay_book import SymbolReplay, bridges, diff_ids

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
    first_event_ms: int | None
    """The first event time (``E``) the feed will send, ms; ``None`` if it has none."""

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
        self.first_event_ms: int | None = venue.start_ns // 1_000_000
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


def snapshot_owner(snapshot: dict[str, Any], market: Market, diffs: Mapping[str, Sequence[BookDelta]],
                   prices: Mapping[str, float], seen_last: str) -> str | None:  # fmt: skip
    """Which symbol a raw REST snapshot (it names none) belongs to: of the symbols with a diff that bridges it, the
    one whose last price seen lies within the snapshot's levels (USD-M symbols share one id space, so ids alone do not
    tell), else the symbol of the depth stream seen last before it.

    >>> snap = {"lastUpdateId": 10, "bids": [["99.0", "1"], ["98.0", "1"]], "asks": [["101.0", "1"]]}
    >>> ids = {s: [diff_ids({"U": 9, "u": 12})] for s in ("BTCUSDT", "ETHUSDT")}
    >>> snapshot_owner(snap, "spot", ids, {"BTCUSDT": 64000.0, "ETHUSDT": 99.5}, "BTCUSDT")
    'ETHUSDT'
    """
    last_id = int(snapshot["lastUpdateId"])
    owners = [s for s, ids in diffs.items() if bridges(market, last_id, ids)]
    if len(owners) > 1 and snapshot["bids"] and snapshot["asks"]:
        low, high = float(snapshot["bids"][-1][0]), float(snapshot["asks"][-1][0])
        owners = [s for s in owners if low <= prices.get(s, float("nan")) <= high] or owners
    if len(owners) == 1:
        return owners[0]
    owner = seen_last or None
    logger.warning("replay: snapshot %d is bridged by the diffs of %s; taken as %s's", last_id, owners or "no symbol",
                   owner)  # fmt: skip
    return owner


class ReplayFeed:
    """Capture lines as they were received; ``ts_ns`` is the capture's receive time (for pacing).

    REST answers come from one :class:`~ccf.venue_server.replay_book.SymbolReplay` per symbol, fed with what has
    been published. A snapshot line has no symbol: it belongs to the symbol one of whose diffs bridges it (update
    ids are per symbol), else to the symbol of the depth stream seen last before it.
    """

    def __init__(self, paths: Sequence[Path], market: Market = "spot", batch_size: int = 256) -> None:
        self.paths = list(paths)
        self.market = market
        self.batch_size = batch_size
        self.symbols: tuple[str, ...] = ()
        self.first_event_ms: int | None = None
        self.books: dict[str, SymbolReplay] = {}
        self.snapshot_owners: list[str | None] = []
        """The symbol of each snapshot line of the capture, in order (``None``: none found)."""
        self._snapshots_seen = 0
        self._scan()

    def _scan(self) -> None:
        """Learn the symbols, the first event time, each snapshot line's symbol and each diff's successor."""
        symbols: list[str] = []
        diffs: dict[str, list[BookDelta]] = {}
        lines: list[tuple[bytes, str, dict[str, float]]] = []  # snapshot, depth symbol seen last, prices then
        last = ""
        prices: dict[str, float] = {}  # the last bookTicker bid or trade price of each symbol
        for _, text in read_capture(self.paths):
            if text.startswith('{"stream"'):
                stream = text[11 : text.index('"', 11)]
                sym = stream.partition("@")[0].upper()
                if sym not in symbols:
                    symbols.append(sym)
                kind = stream_kind(stream)
                data = orjson.loads(text)["data"]
                if self.first_event_ms is None and "E" in data:
                    self.first_event_ms = int(data["E"])
                if kind == "depth":
                    diffs.setdefault(sym, []).append(diff_ids(data))
                    last = sym
                elif kind in ("bookTicker", "trade"):
                    prices[sym] = float(data["b" if kind == "bookTicker" else "p"])
            elif text.startswith('{"lastUpdateId"'):
                lines.append((text.encode(), last, dict(prices)))
        self.symbols = tuple(symbols)
        per_symbol: dict[str, list[bytes]] = {}
        for raw, seen_last, prices_then in lines:
            owner = snapshot_owner(orjson.loads(raw), self.market, diffs, prices_then, seen_last)
            self.snapshot_owners.append(owner)
            if owner is not None:
                per_symbol.setdefault(owner, []).append(raw)
        for sym in symbols:
            ids = diffs.get(sym, [])
            succ = {a.last_update_id: b.first_update_id for a, b in itertools.pairwise(ids)}
            self.books[sym] = SymbolReplay(sym, self.market, per_symbol.get(sym, []), succ)
        logger.info("replay %s: symbols %s, snapshot lines %s", self.paths, symbols,
                    {s: len(v) for s, v in per_symbol.items()})  # fmt: skip

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
        """Keep the REST books in step with what has been sent."""
        if not event.stream:
            owner = self.snapshot_owners[self._snapshots_seen]
            self._snapshots_seen += 1
            if owner is not None:
                self.books[owner].on_snapshot(event.text.encode())
            return
        if stream_kind(event.stream) == "depth":
            self.books[event.stream.partition("@")[0].upper()].on_diff(orjson.loads(event.text)["data"])

    def rest_depth(self, symbol: str, limit: int) -> bytes | None:
        book = self.books.get(symbol)
        return None if book is None else book.rest(limit)
