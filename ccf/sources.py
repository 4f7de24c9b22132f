"""Bytewax sources of normalized records, emitted as keyed chunks ``("venue:SYMBOL", [record, ...])``.

Bytewax's per-item cost dominates small work (see DEVELOPERS.md), so a source emits one item per symbol per batch,
not one per record. One symbol always comes from one partition, so its events stay in order.

:class:`RecordSource` turns any deterministic record iterator (capture replay, the seeded synthetic venue) into a
partitioned, resumable source: its resume state is the number of records already emitted, and a restarted run
skips exactly those. Delivery: exactly-once into the flow's state with Bytewax recovery; the sinks' dedup keys
make re-emitted outputs harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition

from ccf import stopping
from ccf.schemas import NewsItem

logger = logging.getLogger(__name__)

Chunk = tuple[str, list[Any]]


NEWS_KEY = "news:ALL"
"""The key of news chunks before they are routed to the symbols they name (:func:`ccf.features.news.route_news`)."""

DLQ_KEY = "!dlq"
"""The key of chunks holding what could not be used (parse errors, frames of venues without a parser)."""


def record_key_str(rec: Any) -> str:
    """``venue:SYMBOL`` of a record or a ``(record, extra)`` pair; :data:`DLQ_KEY` for anything else.

    News items go to ``news:ALL``.
    """
    if type(rec) is tuple:
        rec = rec[0]
    symbol = getattr(rec, "symbol", None)
    if symbol is None or isinstance(rec, Exception):
        return NEWS_KEY if hasattr(rec, "fetched") else DLQ_KEY
    return f"{rec.venue}:{symbol}"


def chunk_by_key(records: Sequence[Any]) -> list[Chunk]:
    """Group records by key, keeping each key's order.

    >>> from types import SimpleNamespace as R
    >>> chunk_by_key([R(venue="v", symbol="A"), R(venue="v", symbol="B"), R(venue="v", symbol="A")])[0][0]
    'v:A'
    """
    groups: dict[str, list[Any]] = {}
    for rec in records:
        key = record_key_str(rec)
        lst = groups.get(key)
        if lst is None:
            groups[key] = [rec]
        else:
            lst.append(rec)
    return list(groups.items())


def chunk_in_time(records: list[Any]) -> list[Chunk]:
    """Keyed chunks of released records, cut at news: the news go between the chunks of the records before and after
    them, so a symbol's engine meets them where they are in time. (Without the cut, a batch's news would follow all
    its market records: late for every window that the batch closed, a backlog's news all late.)

    >>> from types import SimpleNamespace as R
    >>> from ccf.schemas import NewsItem
    >>> n = NewsItem(id="1", feed="f", title="t", link="", published=None, fetched=2)
    >>> a, b = R(venue="v", symbol="A", ts_event=1), R(venue="v", symbol="B", ts_event=3)
    >>> [(k, len(c)) for k, c in chunk_in_time([a, b, n, n, a, b])]
    [('v:A', 1), ('v:B', 1), ('news:ALL', 2), ('v:A', 1), ('v:B', 1)]
    """
    cuts = [i for i, r in enumerate(records) if type(r) is NewsItem]
    if not cuts:
        return chunk_by_key(records)
    chunks: list[Chunk] = []
    start = 0
    for i in [*cuts, len(records)]:
        if i > start:
            chunks += chunk_by_key(records[start:i])
        if i < len(records):
            if chunks and chunks[-1][0] == NEWS_KEY:
                chunks[-1][1].append(records[i])
            else:
                chunks.append((NEWS_KEY, [records[i]]))
        start = i + 1
    return chunks


_MAX_SLEEP_S = 0.5
"""Longest a paced partition sleeps between batches, so a stop request (:mod:`ccf.stopping`) is seen promptly."""

BEHIND_CHECK_S = 10.0
"""Wall seconds between two checks of a paced partition against its schedule."""


class PaceWatch:
    """Tells when a paced source falls behind the speed it was asked for, at most once per ``every_s`` wall seconds.

    A source is behind when, over the last check interval, event time advanced at less than 90 % of the asked speed
    while due records were waiting (the schedule is more than one second of event time ahead of what was emitted).

    >>> w = PaceWatch(10.0, every_s=10.0)
    >>> w.check(wall_s=0.0, event_s=0.0, due_s=0.0) is None
    True
    >>> w.check(wall_s=10.0, event_s=18.0, due_s=100.0)
    'running at 1.8x real time where 10x was asked (82 s of event time behind)'
    >>> w.check(wall_s=20.0, event_s=118.0, due_s=200.0) is None  # 10x over this interval: keeping up again
    True
    """

    def __init__(self, pace: float, every_s: float = BEHIND_CHECK_S) -> None:
        self.pace = pace
        self.every_s = every_s
        self._mark: tuple[float, float] | None = None
        self.warnings = 0

    def check(self, wall_s: float, event_s: float, due_s: float) -> str | None:
        if self._mark is None:
            self._mark = (wall_s, event_s)
            return None
        wall0, event0 = self._mark
        if wall_s - wall0 < self.every_s:
            return None
        self._mark = (wall_s, event_s)
        speed = (event_s - event0) / (wall_s - wall0)
        behind = due_s - event_s
        if speed >= 0.9 * self.pace or behind <= 1.0:
            return None
        self.warnings += 1
        return f"running at {speed:.2g}x real time where {self.pace:g}x was asked ({behind:.0f} s of event time behind)"


class _RecordPartition(StatefulSourcePartition[Chunk, int]):
    def __init__(
        self,
        records: Iterator[Any],
        resume: int | None,
        batch_size: int,
        stop_after_ns: int | None,
        pace: float,
        name: str = "records",
    ) -> None:
        self._name = name
        self._it = records
        self._done = resume or 0
        self._batch = batch_size
        self._stop_after = stop_after_ns
        self._first_ts: int | None = None
        self._last_ts = 0
        self._pace = pace
        self._wall0: datetime | None = None
        self._awake: datetime | None = None
        self._pending: Any = None  # read, not yet due (pace): emitted by a later call, not counted in the snapshot
        self._watch = PaceWatch(pace, every_s=BEHIND_CHECK_S) if pace > 0 else None
        for _ in range(self._done):  # deterministic input: skip what an earlier run already emitted
            rec = next(self._it, None)
            if rec is None:
                break
            self._note_first(rec)

    def _note_first(self, rec: Any) -> None:
        if self._first_ts is None:
            self._first_ts = _ts(rec)

    def next_batch(self) -> list[Chunk]:
        stopping.check(self._name)  # SIGINT/SIGTERM: end here, as at the end of the input
        out: list[Any] = []
        if self._pace > 0:
            now = datetime.now(UTC)
            if self._wall0 is None:
                self._wall0 = now
        for _ in range(self._batch):
            rec, self._pending = (self._pending, None) if self._pending is not None else (next(self._it, None), None)
            if rec is None:
                if out:
                    break
                raise StopIteration
            if isinstance(rec, Exception):
                # a dead letter has no time of its own: it takes the time of the input just before it
                rec.ts_recv = self._last_ts  # type: ignore[attr-defined]
                out.append(rec)
                self._done += 1
                continue
            self._note_first(rec)
            assert self._first_ts is not None
            ts = _ts(rec)
            if self._stop_after is not None and ts >= self._first_ts + self._stop_after:
                if out:
                    break
                raise StopIteration
            if self._pace > 0:
                assert self._wall0 is not None
                limit = self._first_ts + int((now - self._wall0).total_seconds() * 1e9 * self._pace)
                if ts > limit:  # not due yet: keep it for a later call (woken at most _MAX_SLEEP_S later)
                    self._pending = rec
                    wait = min((ts - limit) / 1e9 / self._pace, _MAX_SLEEP_S)
                    self._awake = now + timedelta(seconds=wait)
                    break
            self._last_ts = ts
            out.append(rec)
            self._done += 1
        if self._watch is not None and out:
            self._check_pace(now)
        return chunk_in_time(out)

    def _check_pace(self, now: datetime) -> None:
        assert self._wall0 is not None and self._first_ts is not None and self._watch is not None
        wall = (now - self._wall0).total_seconds()
        message = self._watch.check(wall, (self._last_ts - self._first_ts) / 1e9, wall * self._pace)
        if message is not None:
            logger.warning("%s falls behind: %s", self._name, message)

    def next_awake(self) -> datetime | None:
        awake, self._awake = self._awake, None
        return awake

    def snapshot(self) -> int:
        return self._done


def _ts(rec: Any) -> int:
    if type(rec) is tuple:
        rec = rec[0]
    ts = getattr(rec, "ts_event", None)
    if ts is None:
        ts = getattr(rec, "fetched", None)
    if ts is None:
        ts = getattr(rec, "ts_recv", 0)  # raw frames; errors carry no time and count as 0
    return int(ts or 0)


class RecordSource(FixedPartitionedSource[Chunk, int]):
    """Partitioned source over deterministic record iterators.

    ``partitions`` maps a partition name to a zero-argument factory returning a fresh iterator of records in
    arrival order. ``stop_after_s`` ends each partition after that many seconds of event time; ``pace`` 0 runs as
    fast as possible, 1 in real time, N at N× real time.
    """

    def __init__(
        self,
        partitions: dict[str, Callable[[], Iterator[Any]]],
        batch_size: int = 2000,
        stop_after_s: float | None = None,
        pace: float = 0.0,
    ) -> None:
        self._parts = partitions
        self._batch = batch_size
        self._stop_after = round(stop_after_s * 1e9) if stop_after_s else None
        self._pace = pace

    def list_parts(self) -> list[str]:
        return list(self._parts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _RecordPartition:
        logger.info("source %s partition %s starts after %s records", step_id, for_part, resume_state or 0)
        return _RecordPartition(self._parts[for_part](), resume_state, self._batch, self._stop_after, self._pace,
                                name=f"source {step_id} partition {for_part}")


class _MappedPartition(StatefulSourcePartition[Chunk, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], to_chunks: Callable[[list[Any]], list[Chunk]]) -> None:
        self.inner = inner
        self.to_chunks = to_chunks

    def next_batch(self) -> list[Chunk]:
        return self.to_chunks(list(self.inner.next_batch()))

    def next_awake(self) -> datetime | None:
        return self.inner.next_awake()

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class ChunkingSource(FixedPartitionedSource[Chunk, Any]):
    """Another partitioned source whose batches ``to_chunks`` turns into keyed chunks (same partitions, same
    resume state)."""

    def __init__(self, inner: Source[Any], to_chunks: Callable[[list[Any]], list[Chunk]]) -> None:
        if not isinstance(inner, FixedPartitionedSource):
            raise TypeError(f"ChunkingSource wraps a FixedPartitionedSource, not {type(inner).__name__}")
        self.inner: FixedPartitionedSource[Any, Any] = inner
        self.to_chunks = to_chunks

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _MappedPartition:
        return _MappedPartition(self.inner.build_part(step_id, for_part, resume_state), self.to_chunks)
