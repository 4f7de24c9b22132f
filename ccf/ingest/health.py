"""Health and dead-letter entries of the ingest flow: JSON objects for ``ccf.health`` and ``ccf.dlq``.

Every health entry has ``ts`` (ns, wall clock), ``kind``, ``venue``, ``symbol`` (``""`` for a whole connection) and
``conn``; the kinds:

=================== ===================================================================================
kind                when, and its extra fields
=================== ===================================================================================
(websocket kinds)   :class:`ccf.wsource.HealthEvent` kinds (``connecting``, ``connected``, ``subscribed``,
                    ``disconnected``, ``stalled``, ``max_age``, ``backoff``, ``rest_failed``, ``worker_died``
                    (detail = the error line; a restart follows), ``failed``, ``ended``): ``session``, ``detail``,
                    ``attempt``
``resync``          a book needs a new snapshot: ``reason`` (``GAP``, ``CROSSED``, ``CHECKSUM``, ``new_session``,
                    ``snapshot_too_old``), ``detail``, ``epoch``
``snapshot``        a snapshot went into a book: ``last_update_id``, ``event``, ``epoch``, ``valid``
``snapshot_failed`` a REST snapshot could not be fetched or parsed: ``detail``, ``retry_in_s``
``lag``             every few seconds per connection: ``frames``, ``records``, ``queue_ms`` (longest wait of a
                    frame between receipt and the flow), ``venue_ms`` (largest receipt minus venue time),
                    ``books_valid``, ``books``, ``dead_letters``, ``resyncs``
``kafka_retry``     deliveries that failed and were produced again: ``failed``, ``rounds``, ``errors``
=================== ===================================================================================

A dead letter is :meth:`ccf.errors.DataError.to_dict` (``error``, ``venue``, ``symbol``, ``reason``, ``raw``) plus
``ts`` and ``conn``.

>>> from ccf.errors import ParseError
>>> d = dead_letter(ParseError("invalid JSON", venue="binance", raw='{"stream":'), "binance", 5)
>>> d["venue"], d["raw"], d["reason"], d["ts"], d["conn"]
('binance', '{"stream":', 'invalid JSON', 5, 'binance')
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ccf.errors import DataError
from ccf.schemas import MarketRecord
from ccf.wsource import HealthEvent


def health(kind: str, venue: str, conn: str, symbol: str = "", ts: int | None = None, **fields: Any) -> dict[str, Any]:
    """One health entry (see the module docstring for the kinds and their fields)."""
    return {"ts": time.time_ns() if ts is None else ts, "kind": kind, "venue": venue, "symbol": symbol, "conn": conn,
            **fields}


def ws_health(event: HealthEvent, venue: str) -> dict[str, Any]:
    """A websocket :class:`HealthEvent` as a health entry."""
    return health(event.kind, venue, event.conn, ts=event.ts, session=event.session, detail=event.detail,
                  attempt=event.attempt)


def dead_letter(error: DataError, conn: str, ts: int) -> dict[str, Any]:
    """What could not be used, with its raw payload and the reason."""
    entry: dict[str, Any] = error.to_dict()
    entry["ts"] = ts
    entry["conn"] = conn
    return entry


class LagMeter:
    """Counts what one connection delivers and, every ``every_s`` seconds, says how late it is (a ``lag`` entry)."""

    def __init__(self, venue: str, conn: str, every_s: float = 10.0) -> None:
        self.venue = venue
        self.conn = conn
        self.every_ns = round(every_s * 1e9)
        self.next_ns = time.time_ns() + self.every_ns
        self.frames = 0
        self.records = 0
        self.dead = 0
        self.resyncs = 0
        self.queue_ns = 0

    def batch(self, frames: int, oldest_recv_ns: int, now_ns: int) -> None:
        """A batch of ``frames`` frames, the oldest received at ``oldest_recv_ns``, is processed at ``now_ns``."""
        self.frames += frames
        if frames:
            self.queue_ns = max(self.queue_ns, now_ns - oldest_recv_ns)

    def due(self, now_ns: int) -> bool:
        return now_ns >= self.next_ns

    def report(self, now_ns: int, records: Sequence[MarketRecord], books: int, valid: int) -> dict[str, Any]:
        """The ``lag`` entry for the interval that ends now; ``records`` are the current batch's (for ``venue_ms``)."""
        venue_ns = max((r.ts_recv - r.ts_event for r in records if r.ts_event != r.ts_recv), default=0)
        entry = health("lag", self.venue, self.conn, ts=now_ns, frames=self.frames, records=self.records,
                       queue_ms=round(self.queue_ns / 1e6, 3), venue_ms=round(venue_ns / 1e6, 3), books_valid=valid,
                       books=books, dead_letters=self.dead, resyncs=self.resyncs)
        self.frames = self.records = self.dead = self.resyncs = self.queue_ns = 0
        self.next_ns = now_ns + self.every_ns
        return entry
