"""Normalized records: what every venue, flow, sink and model speaks.

Every market record has ``venue``, ``symbol`` (``BASE-QUOTE``, upper case), ``ts_event`` (the venue's own time) and
``ts_recv`` (when we received it), both UTC nanoseconds since the epoch as ``int``.

Types are frozen :class:`msgspec.Struct` s with a tag that carries the schema version, so one decoder reads any record
and a reader can refuse a version it does not know. ``benchmarks/bench_schemas.py`` measured msgspec against frozen
dataclasses + orjson on these records: see ``docs/architecture.md`` for the numbers and the choice.

Numbers: prices and sizes are ``float`` (IEEE-754 binary64). Every decimal with at most 15 significant digits
converts to a binary64 whose shortest ``repr`` gives back the same decimal, and venue prices and sizes stay well
inside that (BTC at 118234.56 has 8 digits; a size of 0.00012345 has 5), so ``float(s)`` is exact *to the venue's
decimals*: equal strings give equal floats, book keys compare exactly, and ``format_decimal`` restores the venue's
text. Venues whose checksums hash the original strings (Kraken, OKX) keep those strings beside the book.

>>> t = Trade(venue="binance", symbol="ETH-USDT", ts_event=1, ts_recv=2, price=2500.01, size=0.5,
...           side="buy", trade_id="42")
>>> decode(encode(t)) == t
True
>>> encode(t)[:24]
b'{"type":"trade.v1","venu'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, Literal, TypeAlias

import msgspec

SCHEMA_VERSION: Final = 1

NO_VENUE_TIME: Final = 0
"""``ts_event`` of a record whose message carries no venue time (Binance spot ``bookTicker`` and REST snapshots)
until :class:`ccf.venues.event_time.EventTimes` stamps it; never the wall clock."""

Side: TypeAlias = Literal["buy", "sell"]
"""Taker side of a trade."""

Level: TypeAlias = tuple[float, float]
"""One book level: ``(price, size)``; size 0 in a delta removes the level."""


class _Record(msgspec.Struct, frozen=True, tag_field="type", omit_defaults=False, forbid_unknown_fields=False):
    """Base of every record (not encoded on its own)."""


class BookSnapshot(_Record, frozen=True, tag="book_snapshot.v1"):
    """A full (or top-N) book from a REST snapshot or a websocket snapshot message.

    ``checkpoint``: not the venue's snapshot but a copy of a book already in sync, that the ingest flow publishes
    now and then (``CCF_VENUES__CHECKPOINT_S``) just after the update ``last_update_id`` it holds, at that update's
    time. A book in sync ignores it; one that is not (a consumer that starts in the middle of ``ccf.book``) takes
    it and goes on from the next update.
    """

    venue: str
    symbol: str
    ts_event: int
    ts_recv: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    last_update_id: int = 0
    checksum: int | None = None
    epoch: int = 0
    checkpoint: bool = False


class BookDelta(_Record, frozen=True, tag="book_delta.v1"):
    """Changed levels. ``first_update_id``/``last_update_id`` are the venue's sequence range (Binance U/u,
    Coinbase/Bybit sequence, both equal when the venue has one id per message); ``prev_update_id`` is the id the venue
    says came just before (Binance futures ``pu``), when it says."""

    venue: str
    symbol: str
    ts_event: int
    ts_recv: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    first_update_id: int = 0
    last_update_id: int = 0
    prev_update_id: int | None = None
    checksum: int | None = None
    epoch: int = 0


class BookTop(_Record, frozen=True, tag="book_top.v1"):
    """The venue's own best bid/ask (Binance ``bookTicker``): a check on our books, and a feature source."""

    venue: str
    symbol: str
    ts_event: int
    ts_recv: int
    bid_price: float
    bid_size: float
    ask_price: float
    ask_size: float
    update_id: int = 0


class Trade(_Record, frozen=True, tag="trade.v1"):
    """One trade (or one aggregate trade), with the taker's side."""

    venue: str
    symbol: str
    ts_event: int
    ts_recv: int
    price: float
    size: float
    side: Side
    trade_id: str


class Kline(_Record, frozen=True, tag="kline.v1"):
    """An OHLCV bar. ``ts_event`` is the bar's open time; ``interval_s`` its length; ``closed`` whether it is final."""

    venue: str
    symbol: str
    ts_event: int
    ts_recv: int
    interval_s: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float = 0.0
    trades: int = 0
    taker_buy_volume: float = 0.0
    closed: bool = True


class NewsItem(_Record, frozen=True, tag="news.v1"):
    """A news entry. ``published`` is what the feed claims; ``fetched`` when we first saw it (features use this one,
    so nothing can look ahead)."""

    id: str
    feed: str
    title: str
    link: str
    published: int | None
    fetched: int
    summary: str = ""


class FeatureRow(_Record, frozen=True, tag="features.v1"):
    """Features of one symbol over one event-time window ``[window_start, window_end)``.

    A feature without a value is NaN in memory; JSON has no NaN, so on the wire it is ``null`` and decodes as
    ``None``."""

    venue: str
    symbol: str
    window_start: int
    window_end: int
    feature_set: str
    book_valid: bool
    epoch: int
    features: Mapping[str, float | None]


class Prediction(_Record, frozen=True, tag="prediction.v1"):
    """A forecast of the mid log-return from ``issued_at`` to ``target_time``."""

    model: str
    model_version: str
    venue: str
    symbol: str
    horizon_steps: int
    horizon_s: float
    issued_at: int
    target_time: int
    value: float
    quantiles: dict[str, float] = msgspec.field(default_factory=dict)


class Score(_Record, frozen=True, tag="score.v1"):
    """Running scores of one model at one horizon on one symbol, as of ``window_end``."""

    model: str
    horizon_steps: int
    venue: str
    symbol: str
    window_end: int
    n: int
    mae: float
    rmse: float
    hit_rate: float | None
    pinball: float | None
    coverage: float | None
    skill: float | None


Record: TypeAlias = (
    BookSnapshot | BookDelta | BookTop | Trade | Kline | NewsItem | FeatureRow | Prediction | Score
)
MarketRecord: TypeAlias = BookSnapshot | BookDelta | BookTop | Trade | Kline

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Record)


def encode(record: Record) -> bytes:
    """JSON bytes of a record, tagged with its type and schema version."""
    return _encoder.encode(record)


def decode(data: bytes | str) -> Record:
    """A record from :func:`encode` 's bytes. Raises :class:`msgspec.DecodeError` (or its subclass ``ValidationError``) on anything else."""
    record: Record = _decoder.decode(data)
    return record


def feature(row: FeatureRow, name: str) -> float:
    """A feature's value as a float: NaN when it has none (absent, NaN, or ``null`` from the wire).

    >>> feature(FeatureRow("v", "A-B", 0, 1, "x", True, 0, {"mid": None, "spread": 0.5}), "mid")
    nan
    """
    v = row.features.get(name)
    return math.nan if v is None else v


def record_key(record: MarketRecord | FeatureRow | Prediction | Score) -> bytes:
    """The Kafka key: ``venue:SYMBOL`` (one symbol stays in one partition, so its events stay in order).

    >>> record_key(BookTop(venue="binance", symbol="BTC-USDT", ts_event=0, ts_recv=0, bid_price=1.0, bid_size=1.0,
    ...                    ask_price=2.0, ask_size=1.0))
    b'binance:BTC-USDT'
    """
    return f"{record.venue}:{record.symbol}".encode()


def format_decimal(value: float) -> str:
    """The shortest decimal text of a float, never in exponent form (what the venue sent, minus trailing zeros).

    >>> format_decimal(0.00012345), format_decimal(118234.56), format_decimal(1e-8), format_decimal(3.0)
    ('0.00012345', '118234.56', '0.00000001', '3')
    """
    text = repr(value)
    if "e" in text or "E" in text:
        mantissa, exp = text.lower().split("e")
        digits = mantissa.replace(".", "").lstrip("-")
        point = (mantissa.find(".") if "." in mantissa else len(mantissa)) - mantissa.startswith("-")
        shift = point + int(exp)
        sign = "-" if value < 0 else ""
        if shift <= 0:
            text = sign + "0." + "0" * (-shift) + digits
        elif shift >= len(digits):
            text = sign + digits + "0" * (shift - len(digits))
        else:
            text = sign + digits[:shift] + "." + digits[shift:]
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
