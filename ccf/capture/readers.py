"""Readers for recorded market data: each file becomes records (or raw frames) in receipt-time order.

Formats (:func:`detect_format` tells them apart by file name, then by the first lines):

* ``cryptofeed_ws`` / ``cryptofeed_http`` / ``cryptofeed_meta``: cryptofeed playback files ``NAME.ws.N.M``,
  ``NAME.http.N.M``, ``NAME.N`` (gzip or not). The venue is ``NAME`` lower-cased.
* ``hftbacktest``: ``<receipt ts> <raw Binance message>`` per line, ts in ns or µs; one line is the raw REST depth
  snapshot, whose market and symbol come from the file's stream names.
* ``binance_events_jsonl``: bare Binance events one per line, no receipt time (``ts_recv`` := ``ts_event``).
* ``binance_kline_csv``: Binance Data Vision klines ``SYMBOL-1m-YYYY-MM-DD.csv``, no header, times in ms until
  2024-12-31 and µs from 2025-01-01; ``ts_recv`` is the bar's close (when it became known).
* ``tardis_trades`` / ``tardis_quotes``: Tardis CSV (µs).
* ``ccf_recording``: what ``ccf record`` writes (zstd or gzip JSONL, :mod:`ccf.capture.record`).

:func:`read_records` merges files by receipt time and yields :data:`Item` s: normalized records for venues with a
:class:`~ccf.capture.registry.VenueCodec`, :class:`RawFrame` for the others, and a :class:`~ccf.errors.ParseError`
(not raised) for every line that does not parse, so bad lines can be counted and routed.
"""

from __future__ import annotations

import csv
import gzip
import heapq
import io
import logging
import re
import zlib
from collections.abc import Iterable, Iterator
from enum import StrEnum
from operator import itemgetter
from pathlib import Path
from typing import IO, TypeAlias

import msgspec

from ccf.capture.registry import VENUES, codec_for
from ccf.errors import DataFileError, ParseError
from ccf.schemas import BookTop, Kline, MarketRecord, Side, Trade
from ccf.venues import binance
from ccf.venues.event_time import EventTimes

logger = logging.getLogger(__name__)


class RawFrame(msgspec.Struct, frozen=True):
    """A recorded message of a venue without a registered parser: its text exactly as received."""

    venue: str
    ts_recv: int
    payload: str
    source: str
    """``file:line``."""
    url: str = ""
    """The REST URL for a recorded REST response; empty for websocket frames."""


Item: TypeAlias = MarketRecord | RawFrame | ParseError | tuple[MarketRecord, object]
_Timed: TypeAlias = tuple[int, Item]


class Format(StrEnum):
    CRYPTOFEED_WS = "cryptofeed_ws"
    CRYPTOFEED_HTTP = "cryptofeed_http"
    CRYPTOFEED_META = "cryptofeed_meta"
    HFTBACKTEST = "hftbacktest"
    BINANCE_EVENTS = "binance_events_jsonl"
    BINANCE_KLINE_CSV = "binance_kline_csv"
    TARDIS_TRADES = "tardis_trades"
    TARDIS_QUOTES = "tardis_quotes"
    CCF_RECORDING = "ccf_recording"


_CRYPTOFEED_NAME = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)\.(?:(?P<kind>ws|http)\.)?\d+(?:\.\d+)?(?:\.gz)?$")
_KLINE_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<n>\d+)(?P<unit>[smhdwM])-\d{4}-\d{2}(?:-\d{2})?\.csv")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000}
_TARDIS_TRADES_HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
_TARDIS_QUOTES_HEADER = "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount"
_TARDIS_VENUES = {"binance": "binance", "binance-futures": "binance_futures", "binance-delivery": "binance_delivery",
                  "binance-us": "binance_us"}


def to_ns(value: int) -> int:
    """An epoch timestamp in s, ms, µs or ns (told apart by magnitude; valid 1973-2286) -> ns.

    >>> to_ns(1735689540000), to_ns(1735689600000000), to_ns(1723161254024619568), to_ns(1633998512)
    (1735689540000000000, 1735689600000000000, 1723161254024619568, 1633998512000000000)
    """
    if value >= 100_000_000_000_000_000:
        return value
    if value >= 100_000_000_000_000:
        return value * 1_000
    if value >= 100_000_000_000:
        return value * 1_000_000
    return value * 1_000_000_000


def seconds_to_ns(text: str) -> int:
    """Decimal seconds text -> ns, exactly (no float rounding).

    >>> seconds_to_ns("1633998512.0633569"), seconds_to_ns("1626992741")
    (1633998512063356900, 1626992741000000000)
    """
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a unix time: {text!r}")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


def open_text(path: Path, errors: str = "replace") -> IO[str]:
    """Open a capture as text, decompressing when the file starts with the gzip or zstd magic bytes. A byte that is
    not UTF-8 reads as U+FFFD (``errors="replace"``): its line then fails to parse and becomes a dead letter."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors=errors, newline="")


def open_binary(path: Path) -> IO[bytes]:
    raw = path.open("rb")
    magic = raw.read(4)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        raw.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a binary IO; it owns its file (fileobj= would not)
    if magic == b"\x28\xb5\x2f\xfd":  # zstd (``ccf record``)
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))  # lines need a buffer
    return raw


def detect_format(path: str | Path) -> Format:
    """The capture format of ``path``; raises :class:`~ccf.errors.DataFileError` (one line) when it is missing,
    empty, or none of :class:`Format`."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    match = _CRYPTOFEED_NAME.match(path.name)
    if match:
        return {"ws": Format.CRYPTOFEED_WS, "http": Format.CRYPTOFEED_HTTP}.get(match["kind"] or "",
                                                                           Format.CRYPTOFEED_META)
    try:
        with open_text(path, errors="strict") as f:
            head = [line for _, line in zip(range(20), f, strict=False) if line.strip()]
    except (UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:  # binary (parquet, zip), or a broken gzip
        raise DataFileError(f"{path}: unknown capture format (binary or corrupt: {exc})") from exc
    if not head:
        raise DataFileError(f"{path}: empty file")
    first = head[0].rstrip("\r\n")
    if first.startswith('{"ccf_recording":'):
        return Format.CCF_RECORDING
    if re.match(r"^\d{13,19} [{\[]", first):
        return Format.HFTBACKTEST
    if first == _TARDIS_TRADES_HEADER:
        return Format.TARDIS_TRADES
    if first == _TARDIS_QUOTES_HEADER:
        return Format.TARDIS_QUOTES
    if re.match(r"^\d{12,17},", first) and first.count(",") == 11:
        return Format.BINANCE_KLINE_CSV
    if any('"e":"' in line for line in head) and path.name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        return Format.BINANCE_EVENTS
    if re.match(r"^\S+ <-> [\d.]+\s*$", first):
        return Format.CRYPTOFEED_WS
    if re.match(r"^\S+ -> [\d.]+: ", first):
        return Format.CRYPTOFEED_HTTP
    raise DataFileError(f"{path}: unknown capture format (first line {first[:60]!r}); CCF reads hftbacktest, "
                        "cryptofeed, Tardis, Binance event and kline files and ccf record output")


def read_records(paths: Iterable[str | Path], *, with_extra: bool = False) -> Iterator[Item]:
    """Every item of every file, merged by receipt time (stable: equal times keep file order, then path order).

    With ``with_extra``, book records whose venue hands extra data to its sync rule come as ``(record, extra)``.
    """
    streams = [_read_file(Path(p)) for p in paths]
    stamp = EventTimes().stamp  # records without venue time get it here, as in the live paths
    for _, item in heapq.merge(*streams, key=itemgetter(0)):
        item = stamp(item)
        if type(item) is tuple and not with_extra:
            yield item[0]
        else:
            yield item


def read_file(path: str | Path) -> Iterator[Item]:
    """The items of one file, in file order (records without venue time stamped with it)."""
    stamp = EventTimes().stamp
    for _, item in _read_file(Path(path)):
        yield stamp(item)


def cryptofeed_session(directory: str | Path, name: str) -> list[Path]:
    """The websocket and REST files of one cryptofeed recording, e.g. ``("…/cryptofeed_sample_data", "BINANCE")``."""
    directory = Path(directory)
    return [p for kind in ("ws", "http") for p in sorted(directory.glob(f"{name}.{kind}.*"))]


_UNREADABLE = (EOFError, zlib.error, OSError, UnicodeDecodeError)
"""What a truncated or corrupt compressed file raises part way through."""


def _read_file(path: Path) -> Iterator[_Timed]:
    """The items of ``path``; a file cut short (a truncated gzip, say) keeps what was read before the break, plus
    one dead letter saying where it broke; a file with nothing readable is a :class:`DataFileError`."""
    items = _items(path)
    count, last_ts = 0, 0
    while True:
        try:
            timed = next(items)
        except StopIteration:
            return
        except _UNREADABLE as exc:
            if count == 0:
                raise DataFileError(f"{path}: nothing readable ({exc})") from exc
            logger.warning("%s: unreadable after %d items (%s); the rest of the file is skipped", path, count, exc)
            yield last_ts, ParseError(f"{path.name}: unreadable after {count} items: {exc}", raw="")
            return
        count += 1
        last_ts = timed[0]
        yield timed


def _items(path: Path) -> Iterator[_Timed]:
    fmt = detect_format(path)
    logger.debug("reading %s as %s", path, fmt)
    if fmt is Format.CRYPTOFEED_WS or fmt is Format.CRYPTOFEED_HTTP:
        match = _CRYPTOFEED_NAME.match(path.name)
        venue = match["name"].lower() if match else path.name.split(".")[0].lower()
        return _cryptofeed(path, venue, rest=fmt is Format.CRYPTOFEED_HTTP)
    if fmt is Format.CRYPTOFEED_META:
        return iter(())
    if fmt is Format.HFTBACKTEST:
        return _hftbacktest(path)
    if fmt is Format.BINANCE_EVENTS:
        return _binance_events(path)
    if fmt is Format.BINANCE_KLINE_CSV:
        return _kline_csv(path)
    if fmt is Format.CCF_RECORDING:
        from ccf.capture.record import read_recording  # it reads with this module's helpers

        return read_recording(path)
    return _tardis(path, quotes=fmt is Format.TARDIS_QUOTES)


def _error(exc: ParseError, path: Path, lineno: int) -> ParseError:
    err = ParseError(f"{path.name}:{lineno}: {exc.reason}", venue=exc.venue, symbol=exc.symbol, raw=exc.raw)
    err.__cause__ = exc
    return err


def _cryptofeed(path: Path, venue: str, *, rest: bool) -> Iterator[_Timed]:
    codec = VENUES.get(venue)
    ts = 0
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            url = ""
            if rest:
                url, sep, rest_of_line = line.partition(" -> ")
                if not sep:
                    if line.startswith("configuration: "):
                        continue
                    yield ts, ParseError(f"{path.name}:{lineno}: no ' -> ' in a REST line", venue=venue, raw=line)
                    continue
                line = rest_of_line
            elif not line[0].isdigit():
                if " <-> " in line:  # connection opened: its URL may decide how frames parse (Bybit's category)
                    codec = codec_for(venue, line.partition(" <-> ")[0])
                    continue
                if " <- " in line:
                    continue  # a message we sent
                yield ts, ParseError(f"{path.name}:{lineno}: not a '<time>: <message>' line", venue=venue, raw=line)
                continue
            stamp, sep, payload = line.partition(": ")
            try:
                if not sep:
                    raise ValueError("no ': ' after the receipt time")
                ts = seconds_to_ns(stamp)
            except ValueError as exc:
                yield ts, ParseError(f"{path.name}:{lineno}: {exc}", venue=venue, raw=line)
                continue
            if codec is None:
                yield ts, RawFrame(venue, ts, payload, f"{path.name}:{lineno}", url)
                continue
            try:
                parsed = codec.parse_rest(url, payload, ts) if rest else codec.parse_frame(payload, ts)
            except ParseError as exc:
                yield ts, _error(exc, path, lineno)
                continue
            for item in parsed:
                yield ts, item


def _hftbacktest_market(path: Path) -> tuple[str, str]:
    """(venue, venue symbol) of an hftbacktest Binance file, from its first stream names and depth messages."""
    symbols: set[str] = set()
    futures = False
    with open_binary(path) as f:
        for _, line in zip(range(5000), f, strict=False):
            m = re.search(rb'"stream":"([a-z0-9_]+)@', line)
            if m:
                symbols.add(m[1].decode().upper())
                futures = futures or (b'"depthUpdate"' in line and b'"pu":' in line)
            elif line.split(b" ", 1)[-1].startswith(b'{"lastUpdateId"'):
                futures = futures or b'"T":' in line
    if len(symbols) != 1:
        return "", ""
    symbol = symbols.pop()
    venue = ("binance_delivery" if "_" in symbol else "binance_futures") if futures else "binance"
    return venue, symbol


def _hftbacktest(path: Path) -> Iterator[_Timed]:
    venue, symbol = _hftbacktest_market(path)
    ts = 0
    with open_binary(path) as f:
        for lineno, line in enumerate(f, 1):
            stamp, _, raw = line.rstrip(b"\r\n").partition(b" ")
            if not raw:
                if stamp.strip():
                    yield ts, ParseError(f"{path.name}:{lineno}: no message after the time", venue=venue, raw=line)
                continue
            try:
                ts = to_ns(int(stamp))
                if raw.startswith(b'{"lastUpdateId"'):
                    if not symbol:
                        raise ParseError("a depth snapshot in a file with no single stream symbol", raw=raw)
                    yield ts, binance.parse_depth_snapshot(raw, ts, symbol, venue)
                else:
                    record = binance.parse_message(raw, ts, venue or "binance")
                    if record is not None:
                        yield ts, record
            except ParseError as exc:
                yield ts, _error(exc, path, lineno)
            except ValueError as exc:
                yield ts, ParseError(f"{path.name}:{lineno}: bad receipt time: {exc}", venue=venue, raw=line)


def _binance_events(path: Path) -> Iterator[_Timed]:
    ts = 0
    with open_binary(path) as f:
        for lineno, line in enumerate(f, 1):
            raw = line.strip()
            if not raw:
                continue
            venue = "binance_futures" if b'"pu":' in raw else "binance"
            try:
                record = binance.parse_message(raw, 0, venue)
            except ParseError as exc:
                yield ts, _error(exc, path, lineno)
                continue
            if record is not None:
                ts = record.ts_event
                yield ts, msgspec.structs.replace(record, ts_recv=ts)


def _kline_csv(path: Path, venue: str = "binance") -> Iterator[_Timed]:
    match = _KLINE_NAME.match(path.name)
    if not match:
        raise DataFileError(f"{path}: a kline file is named SYMBOL-INTERVAL-DATE.csv[.gz] (BTCUSDT-1m-2024-12-22.csv.gz), "
                            "the name gives its symbol and interval")
    symbol = binance.to_symbol(match["symbol"])
    interval_s = int(match["n"]) * _UNIT_S[match["unit"]]
    ts = 0
    with open_text(path) as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            try:
                if len(row) != 12:
                    raise ValueError(f"{len(row)} columns, want 12")
                if lineno == 1 and not row[0].isdigit():
                    continue  # newer Data Vision files carry a header
                open_ns = to_ns(int(row[0]))
                ts = open_ns + interval_s * 1_000_000_000
                yield ts, Kline(venue=venue, symbol=symbol, ts_event=open_ns, ts_recv=ts, interval_s=interval_s,
                                open=float(row[1]), high=float(row[2]), low=float(row[3]), close=float(row[4]),
                                volume=float(row[5]), quote_volume=float(row[7]), trades=int(row[8]),
                                taker_buy_volume=float(row[9]), closed=True)
            except ValueError as exc:
                yield ts, ParseError(f"{path.name}:{lineno}: {exc}", venue=venue, symbol=symbol, raw=",".join(row))


def _tardis(path: Path, *, quotes: bool) -> Iterator[_Timed]:
    ts = 0
    with open_text(path) as f:
        rows = csv.reader(f)
        columns = {name: i for i, name in enumerate(next(rows, []))}
        for lineno, row in enumerate(rows, 2):
            venue = symbol = ""
            try:
                col = {name: row[i] for name, i in columns.items()}
                venue = _TARDIS_VENUES.get(col["exchange"], col["exchange"].replace("-", "_"))
                codec = VENUES.get(venue)
                symbol = codec.to_symbol(col["symbol"]) if codec else col["symbol"]
                ts = to_ns(int(col["local_timestamp"]))
                ts_event = to_ns(int(col["timestamp"]))
                record: MarketRecord
                if quotes:
                    record = BookTop(venue=venue, symbol=symbol, ts_event=ts_event, ts_recv=ts,
                                     bid_price=float(col["bid_price"]), bid_size=float(col["bid_amount"]),
                                     ask_price=float(col["ask_price"]), ask_size=float(col["ask_amount"]))
                else:
                    if col["side"] not in ("buy", "sell"):
                        raise ValueError(f"taker side {col['side']!r}")
                    side: Side = "buy" if col["side"] == "buy" else "sell"
                    record = Trade(venue=venue, symbol=symbol, ts_event=ts_event, ts_recv=ts,
                                   price=float(col["price"]), size=float(col["amount"]), side=side,
                                   trade_id=col["id"])
                yield ts, record
            except (ValueError, KeyError, IndexError) as exc:
                yield ts, ParseError(f"{path.name}:{lineno}: {exc!r}", venue=venue, symbol=symbol,
                                     raw=",".join(row))

