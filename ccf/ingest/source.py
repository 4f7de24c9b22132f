"""The ingest flow's input: venue websockets, parsed and book-checked, one :class:`IngestBatch` per batch.

Each partition owns one websocket connection (:class:`ccf.wsource.WsPartition`: reconnects with capped jittered
backoff, silence watchdog, resubscribe, a named error after N failures; a worker thread that dies is a
``worker_died`` health entry and a restart, a new session whose books resync, until a
:class:`~ccf.errors.WorkerDiedError` once ``max_worker_restarts`` restarts in a row saw no message), that
connection's books (:class:`~ccf.ingest.book_sync.BookSync`) and a :class:`~ccf.ingest.fetcher.SnapshotFetcher`.
``next_batch`` drains everything the connection received, parses it with the venue's codec, runs every book record
through its book, starts the REST snapshot requests the books ask for (on background threads: it never waits for
one) and feeds the snapshots that have arrived; it returns one :class:`IngestBatch` (records in arrival order, dead
letters, health entries), because Bytewax's per-item cost dominates work this small.

Resyncs happen here, on the source side, because the connection and the fetcher live here: a ``GAP`` / ``CROSSED``
/ ``CHECKSUM``, a rejected snapshot, or a new websocket session (its first frame) queues a snapshot request; the
snapshot is published in ``ccf.book`` at the position where it went into the book, so the features flow, replaying
the topic with the same rule, goes through the same book states. A REST snapshot that is ahead of the stream (its
``lastUpdateId`` covers updates the websocket has not delivered yet, as when the venue answers faster than its
stream reaches us) is held back and published just before the update that bridges it, with that update's event
time: downstream windows never see a book from the future.

Parallelism unit: one connection. Delivery: at most once from the venue (a live feed cannot rewind; the resume
state only carries the connection's counts, and after a restart every book resyncs from a new snapshot).
``stop_after_s`` ends a partition after that many seconds of receipt time from its first frame (for a live feed,
receipt time is event time within milliseconds). Records whose message has no venue time (REST snapshots, spot
``bookTicker``) get it from :class:`~ccf.venues.event_time.EventTimes`, as in every reader: ``ts_event`` is
always the venue's clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from ccf import stopping
from ccf.book import APPLIED, SNAPSHOT
from ccf.errors import ParseError
from ccf.ingest.book_sync import BookSync
from ccf.ingest.fetcher import Fetched, FetchFn, SnapshotFetcher
from ccf.ingest.health import LagMeter, dead_letter, health, ws_health
from ccf.ingest.links import Link
from ccf.schemas import BookDelta, BookSnapshot, MarketRecord
from ccf.venues.event_time import EventTimes
from ccf.wsource import Frame, WsConfig, WsConnection, WsItem, WsPartition, WsResume

logger = logging.getLogger(__name__)

_END_POLL: Final = timedelta(milliseconds=10)


@dataclass
class IngestBatch:
    """What one source batch produced: records for the raw topics, dead letters and health entries."""

    records: list[MarketRecord] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.records or self.dead or self.health)


@dataclass(frozen=True)
class IngestConfig:
    """How partitions behave (see the module docstring)."""

    ws: WsConfig
    fetch: FetchFn
    stop_after_s: float | None = None
    health_every_s: float = 10.0
    snapshot_workers: int = 2
    resync_backoff_initial_s: float = 0.1
    resync_backoff_max_s: float = 5.0
    end_grace_s: float = 10.0
    """After the venue's end of data, how long snapshots still in flight are waited for."""
    checkpoint_s: float = 0.0
    """Event time between two checkpoints of a book in sync (0: none; see :class:`ccf.schemas.BookSnapshot`)."""


class IngestPartition(StatefulSourcePartition[IngestBatch, WsResume]):
    """One connection: frames -> records, books, snapshots (see the module docstring)."""

    def __init__(self, link: Link, conn: WsConnection, config: IngestConfig, resume: WsResume | None) -> None:
        self.link = link
        self.venue = link.venue
        self.conn = conn.name
        self.symbols = link.symbols_of[conn.name]
        self.codec = link.codec
        self.config = config
        self.session = resume.sessions if resume is not None else 0
        self.sync = BookSync(link.venue, conn.name, checkpoint_ns=round(config.checkpoint_s * 1e9))
        self.times = EventTimes()  # venue time for the records whose message has none (snapshots, spot tops)
        self._last_u: dict[str, int] = {}  # symbol -> last update id its stream has delivered
        self._held: dict[str, BookSnapshot] = {}  # REST snapshots ahead of the stream, until their bridging update
        self.fetcher = SnapshotFetcher(config.fetch, workers=config.snapshot_workers,
                                       backoff_initial_s=config.resync_backoff_initial_s,
                                       backoff_max_s=config.resync_backoff_max_s)
        self.meter = LagMeter(link.venue, conn.name, config.health_every_s)
        self._stop_ns = None if config.stop_after_s is None else round(config.stop_after_s * 1e9)
        self._deadline: int | None = None
        self._ended = False
        self._ws_done = 0.0  # monotonic time by which snapshots still in flight must have arrived, once the feed ended
        self._closed = False
        self.ws = WsPartition(conn, config.ws, resume)

    def next_batch(self) -> list[IngestBatch]:
        if self._ended:
            self.close()
            raise StopIteration
        if stopping.requested():  # SIGINT/SIGTERM: end here, as at the venue's end of data
            self.close()
            stopping.check(f"ingest {self.venue} {self.conn}")
        items: list[WsItem] = []
        if not self._ws_done:
            try:
                items = self.ws.next_batch()
            except StopIteration:  # the server said its data ended: wait a little for the snapshots in flight
                self._ws_done = time.monotonic() + self.config.end_grace_s
        out = IngestBatch()
        for fetched in self.fetcher.ready():
            self._snapshot(fetched, out)
        frames, oldest = 0, 0
        for item in items:
            if isinstance(item, Frame):
                if self._deadline is None and self._stop_ns is not None:
                    self._deadline = item.ts_recv + self._stop_ns
                if self._deadline is not None and item.ts_recv >= self._deadline:
                    self._ended = True
                    break
                if item.session != self.session:
                    self.session = item.session
                    self.sync.new_session(self.symbols, item.session, out.health)
                if not frames:
                    oldest = item.ts_recv
                frames += 1
                self._frame(item, out)
            else:
                out.health.append(ws_health(item, self.venue))
        self._request(out)
        now = time.time_ns()
        if self._deadline is not None and not items and now >= self._deadline:
            self._ended = True  # a silent feed ends on the wall clock
        if self._ws_done and (not self.fetcher.busy or time.monotonic() >= self._ws_done):
            self._ended = True
        self._meter(frames, oldest, now, out)
        if out:
            return [out]
        if self._ended:
            self.close()
            raise StopIteration
        return []

    def _frame(self, frame: Frame, out: IngestBatch) -> None:
        try:
            parsed = self.codec.parse_frame(frame.data, frame.ts_recv)
        except ParseError as exc:
            out.dead.append(dead_letter(exc, self.conn, frame.ts_recv))
            self.meter.dead += 1
            return
        records = out.records
        sync, health_out, stamp = self.sync, out.health, self.times.stamp
        for item in parsed:
            record, extra = item if isinstance(item, tuple) else (item, None)
            record = stamp(record)
            if isinstance(record, BookDelta):
                self._last_u[record.symbol] = record.last_update_id
                held = self._held.get(record.symbol) if self._held else None
                if held is not None and record.last_update_id > held.last_update_id:
                    # the update that bridges a snapshot from ahead of the stream: the snapshot goes out just
                    # before it, at its time, so no window downstream sees a book from the future
                    del self._held[record.symbol]
                    records.append(msgspec.structs.replace(held, ts_event=record.ts_event))
                event = sync.on_delta(record, extra, health_out)
                records.append(record)
                if event is APPLIED and sync.checkpoint_ns:
                    checkpoint = sync.checkpoint(record)  # now and then, a copy of the book for late joiners
                    if checkpoint is not None:
                        records.append(checkpoint)
                continue
            elif isinstance(record, BookSnapshot):  # venues that snapshot in the stream
                sync.on_snapshot(record, extra, health_out)
            records.append(record)

    def _snapshot(self, fetched: Fetched, out: IngestBatch) -> None:
        """A REST snapshot arrived (or failed): into the book and the batch, or ask again."""
        if fetched.body is None:
            delay = self._retry(fetched.symbol, fetched.url)
            out.health.append(health("snapshot_failed", self.venue, self.conn, fetched.symbol, detail=fetched.error,
                                     retry_in_s=delay))
            return
        try:
            parsed = self.codec.parse_rest(fetched.url, fetched.body, fetched.ts_recv)
        except ParseError as exc:
            out.dead.append(dead_letter(exc, self.conn, fetched.ts_recv))
            delay = self._retry(fetched.symbol, fetched.url)
            out.health.append(health("snapshot_failed", self.venue, self.conn, fetched.symbol, detail=exc.reason,
                                     retry_in_s=delay))
            return
        for item in parsed:
            record, extra = item if isinstance(item, tuple) else (item, None)
            record = self.times.stamp(record)
            if isinstance(record, BookSnapshot):
                if self.sync.on_snapshot(record, extra, out.health) is SNAPSHOT:
                    self.fetcher.succeeded(record.symbol)
                if self._last_u.get(record.symbol, -1) < record.last_update_id:
                    self._held[record.symbol] = record  # ahead of the stream (it holds updates not received yet)
                    continue
                self._held.pop(record.symbol, None)  # a newer snapshot the stream has reached replaces a held one
            out.records.append(record)

    def _retry(self, symbol: str, url: str) -> float | None:
        self.sync.wanted.pop(symbol, None)
        return self.fetcher.request(symbol, url)

    def _request(self, out: IngestBatch) -> None:
        wanted = self.sync.take_wanted()
        if not wanted:
            return
        self.meter.resyncs += len(wanted)
        url_of = self.link.snapshot_url
        if url_of is None:  # the venue sends its snapshots in the stream: nothing to fetch
            return
        for symbol in wanted:
            self.fetcher.request(symbol, url_of(symbol))

    def _meter(self, frames: int, oldest: int, now: int, out: IngestBatch) -> None:
        meter = self.meter
        meter.records += len(out.records)
        meter.batch(frames, oldest, now)
        if meter.due(now):
            out.health.append(meter.report(now, out.records, len(self.sync.books), self.sync.valid))

    def next_awake(self) -> datetime | None:
        if self._ws_done:
            return datetime.now(UTC) + _END_POLL
        awake: datetime | None = self.ws.next_awake()
        return awake

    def snapshot(self) -> WsResume:
        return self.ws.snapshot()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.fetcher.close()
            self.ws.close()


class IngestSource(FixedPartitionedSource[IngestBatch, WsResume]):
    """A venue's connections as a Bytewax source of :class:`IngestBatch` es: one partition per connection."""

    def __init__(self, link: Link, config: IngestConfig) -> None:
        self.link = link
        self.config = config
        self._conns = {c.name: c for c in link.connections}

    def list_parts(self) -> list[str]:
        return list(self._conns)

    def build_part(self, step_id: str, for_part: str, resume_state: WsResume | None) -> IngestPartition:
        logger.info("ingest %s: connection %s (%d symbols)", step_id, for_part, len(self.link.symbols_of[for_part]))
        return IngestPartition(self.link, self._conns[for_part], self.config, resume_state)


def batch_records(batches: Sequence[IngestBatch]) -> list[MarketRecord]:
    """Every record of some batches, in order (tests and tools)."""
    return [r for b in batches for r in b.records]
