"""The features flow's Kafka input: the raw topics, merged in event time, as keyed chunks.

A symbol's book updates and its trades travel on different topics (``ccf.book``, ``ccf.trades``; also
``ccf.news`` and other models' ``ccf.predictions``). Read one topic after the other, as a plain consumer does when
it catches up on a backlog (a restart, a replay), and the trades of the next ten minutes would close windows before
the book that belongs to them has arrived. So one Bytewax partition reads partition ``p`` of *every* topic (the
topics are keyed ``venue:SYMBOL`` with one partitioner, so a symbol sits in the same partition number in each), and
releases a record only when no topic-partition that still has data can bring anything older: the release bound is
the smallest latest event time over the topic-partitions not at their end. A topic-partition at its end (a quiet
trade stream, a live feed that is caught up) still holds the others back for ``idle_s`` seconds of wall time from
when it first kept a buffered record back, then stops holding (Flink calls this idleness): after a broker restart
the topic whose backlog comes back first no longer races ahead of the others. Released records keep each topic-partition's own
order (a merge, never a sort), so a venue's sequence on ``ccf.book`` is replayed exactly as it was published.

Resume state: per topic-partition, the offset of the first message not yet released, so a restarted run neither
loses nor repeats one (exactly-once into the flow's state with Bytewax recovery). The same offsets are committed to
the consumer group (``CCF_KAFKA__GROUP_ID``) at each snapshot and every ``commit_every_s``, for lag monitors and for
a start without recovery state, which begins where ``CCF_KAFKA__START_FROM`` says: the committed offsets (default;
the beginning where the group has none), the beginning, or the end. Consumer lag (messages behind the end, per
topic-partition) goes to ``health`` every ``lag_every_s``. A message that does not decode becomes a
:class:`~ccf.errors.ParseError` in the dead-letter chunk, never a crash.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from ccf import stopping
from ccf.errors import ParseError
from ccf.schemas import decode
from ccf.settings import Settings
from ccf.sources import Chunk, chunk_by_key, chunk_in_time

logger = logging.getLogger(__name__)

RAW_TOPICS = ("book", "trades")
OPTIONAL_TOPICS = ("predictions", "health", "dlq")
"""Read when they exist: other models' forecasts (the TFT sidecar), scored by the same scorer as the baselines;
the ingest job's health entries (reconnects, resyncs, lag) and dead letters, which go to the ``health`` table as
the in-process connector's do."""
ENTRY_TOPICS = ("health", "dlq")

Resume = dict[str, int]  # "topic:partition" -> next offset to read


def decode_message(m: Any) -> Any:
    """One Kafka message (or Kafka error) as a record, or a :class:`ParseError` that keeps the raw payload."""
    value = m.value() if callable(getattr(m, "value", None)) else getattr(m, "value", None)
    if value is None:
        err = getattr(m, "err", None) or (m.error() if callable(getattr(m, "error", None)) else m)
        return ParseError(f"Kafka error: {err}")
    try:
        return decode(value)
    except msgspec.DecodeError as exc:  # malformed JSON, or JSON that is no record (ValidationError)
        key = _attr(m, "key") or b""
        venue, _, symbol = key.decode("utf-8", "replace").partition(":")
        where = f"{_attr(m, 'topic')}[{_attr(m, 'partition')}]@{_attr(m, 'offset')}"
        err = ParseError(f"{where}: {exc}", venue=venue, symbol=symbol, raw=value)
        stamp = _attr(m, "timestamp")  # (type, ms) of the Kafka message
        err.ts_recv = int(stamp[1]) * 1_000_000 if stamp and stamp[1] > 0 else 0  # type: ignore[attr-defined]
        return err


def decode_entry(m: Any) -> Any:
    """A message of ``ccf.health`` or ``ccf.dlq``: the ingest job's health entry or dead letter (a JSON object with
    ``kind`` or ``error``) as a dict; anything else as :func:`decode_message` makes it."""
    value = _attr(m, "value")
    try:
        obj = msgspec.json.decode(value) if value is not None else None
    except msgspec.DecodeError:
        obj = None
    if isinstance(obj, dict) and "type" not in obj and ("kind" in obj or "error" in obj):
        return obj
    return decode_message(m)


def _attr(m: Any, name: str) -> Any:
    v = getattr(m, name, None)
    return v() if callable(v) else v


def decode_messages(msgs: Iterable[Any]) -> list[Chunk]:
    """Kafka messages (or Kafka errors) to keyed chunks; what does not decode goes to the dead-letter chunk."""
    return chunk_by_key([decode_message(m) for m in msgs])


def event_time(rec: Any) -> int:
    """The time a record is merged by: venue time for market data, issue time for forecasts, fetch time for news."""
    for name in ("ts_event", "issued_at", "fetched"):
        v = getattr(rec, name, None)
        if v is not None:
            return int(v)
    return -1  # dead letters never hold anything back


class _AlignedPartition(StatefulSourcePartition[Chunk, Resume]):
    def __init__(self, conf: dict[str, Any], tps: list[tuple[str, int]], resume: Resume | None, tail: bool,
                 batch_size: int, idle_s: float = 2.0, start_from: str = "committed", commit_every_s: float = 5.0,
                 lag_every_s: float = 10.0) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.tail = tail
        self.idle_s = idle_s
        self.blocking_since: dict[str, float] = {}  # at-end topic-partition -> when it began to hold records back
        self.batch_size = batch_size
        self.names = [f"{t}:{p}" for t, p in tps]
        # health entries and dead letters carry no event time: passed on as read, never holding the merge back
        self.entries = {f"{t}:{p}" for t, p in tps if t.endswith(ENTRY_TOPICS)}
        self.tps = {f"{t}:{p}": (t, p) for t, p in tps}
        self.where = f"Kafka source partition {tps[0][1] if tps else ''}"
        self.consumer = Consumer({**conf, "enable.auto.commit": False, "enable.partition.eof": True})
        self.next_offset: Resume = start_offsets(self.consumer, tps, resume or {}, start_from)
        self.buffers: dict[str, deque[tuple[int, int, Any]]] = {n: deque() for n in self.names}  # (ts, offset, rec)
        self.latest: dict[str, int] = {}
        self.at_end: dict[str, bool] = dict.fromkeys(self.names, False)
        self.consumer.assign([TopicPartition(t, p, self.next_offset[f"{t}:{p}"]) for t, p in tps])
        self._awake: datetime | None = None
        self.commit_every_s, self.lag_every_s = commit_every_s, lag_every_s
        self.committed: Resume = {}
        now = time.monotonic()
        self._next_commit, self._next_lag = now + commit_every_s, now + lag_every_s

    def next_batch(self) -> list[Chunk]:
        from confluent_kafka import KafkaError

        stopping.check(self.where)  # SIGINT/SIGTERM: end here, as at the end of the input
        dead: list[Any] = []
        for m in self.consumer.consume(num_messages=self.batch_size, timeout=0.005):
            name = f"{m.topic()}:{m.partition()}"
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.at_end[name] = True
                else:
                    logger.warning("Kafka error on %s: %s", name, err)
                    dead.append(ParseError(f"Kafka error on {name}: {err}"))
                continue
            self.at_end[name] = False
            self.blocking_since.pop(name, None)
            if name in self.entries:
                dead.append(decode_entry(m))
                self.next_offset[name] = int(m.offset() or 0) + 1
                continue
            rec = decode_message(m)
            ts = event_time(rec)
            self.buffers[name].append((ts, int(m.offset() or 0), rec))
            if ts > self.latest.get(name, -1):
                self.latest[name] = ts
        released = self._release()
        now = time.monotonic()
        if now >= self._next_commit:
            self._next_commit = now + self.commit_every_s
            self.commit()
        if now >= self._next_lag:
            self._next_lag = now + self.lag_every_s
            dead.extend(self.lag())
        if not released and not dead:
            if not self.tail and all(self.at_end.values()) and not any(self.buffers.values()):
                raise StopIteration
            self._awake = datetime.now(UTC) + timedelta(milliseconds=5)
            return []
        chunks = chunk_in_time(released)
        if dead:
            chunks.extend(chunk_by_key(dead))
        return chunks

    def _release(self) -> list[Any]:
        now = time.monotonic()
        newest = max((buf[-1][0] for buf in self.buffers.values() if buf), default=-1)
        holding = []
        for n in self.names:
            if n in self.entries:
                continue
            latest = self.latest.get(n, -1)
            if not self.at_end[n]:
                holding.append(latest)
            elif newest > latest:  # at its end, and keeping something back: for at most idle_s
                since = self.blocking_since.setdefault(n, now)
                if now - since < self.idle_s:
                    holding.append(latest)
            else:
                self.blocking_since.pop(n, None)
        at_rest = all(self.at_end.values()) and not self.tail
        bound = None if at_rest or not holding else min(holding)  # None: release everything buffered
        prefixes: list[list[tuple[int, int, Any]]] = []
        for name, buf in self.buffers.items():
            # release a prefix in offset order, so the resume offset never skips a record still held back
            out: list[tuple[int, int, Any]] = []
            while buf and (bound is None or buf[0][0] <= bound):
                item = buf.popleft()
                out.append(item)
                self.next_offset[name] = item[1] + 1
            if out:
                prefixes.append(out)
        if len(prefixes) == 1:
            return [rec for _, _, rec in prefixes[0]]
        # a merge by event time that keeps each topic-partition's order (equal times: topic order)
        return [rec for _, _, rec in heapq.merge(*prefixes, key=lambda x: x[0])]

    def next_awake(self) -> datetime | None:
        awake, self._awake = self._awake, None
        return awake

    def snapshot(self) -> Resume:
        self.commit()
        return dict(self.next_offset)

    def commit(self) -> None:
        """Commit the released offsets that moved since the last commit (asynchronously: never waits on the broker)."""
        from confluent_kafka import KafkaException, TopicPartition

        moved = {n: o for n, o in self.next_offset.items() if o >= 0 and self.committed.get(n) != o}
        if not moved:
            return
        try:
            self.consumer.commit(offsets=[TopicPartition(*self.tps[n], o) for n, o in moved.items()],
                                 asynchronous=True)
        except KafkaException as exc:  # the broker is away: the next commit carries the same offsets
            logger.warning("committing offsets failed: %s", exc)
            return
        self.committed.update(moved)

    def lag(self) -> list[dict[str, Any]]:
        """Messages behind the end per topic-partition, as health entries (``value`` is the lag)."""
        from confluent_kafka import TopicPartition

        out = []
        for n, (t, p) in self.tps.items():
            try:
                low, high = self.consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
            except Exception:  # no watermark known yet (nothing fetched from this partition): nothing to report
                continue
            if high < 0:
                continue
            nxt = self.next_offset[n]
            behind = high - (nxt if nxt >= 0 else low)
            out.append({"kind": "consumer_lag", "venue": "kafka", "symbol": n, "ts": time.time_ns(),
                        "value": float(max(behind, 0)), "reason": f"{max(behind, 0)} messages behind on {n}"})
        return out

    def close(self) -> None:
        self.commit()
        self.consumer.close()


def _committed(consumer: Any, tps: list[Any], give_up_s: float = 120.0) -> list[Any]:
    """``consumer.committed(tps)``, retried while the group coordinator is not ready (a broker just started, or
    moving its coordinator: ``NOT_COORDINATOR``, ``COORDINATOR_LOAD_IN_PROGRESS``, ...), for up to ``give_up_s``."""
    import random

    from confluent_kafka import KafkaError, KafkaException

    from ccf.backoff import backoff_delay

    transient = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                 KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}

    deadline = time.monotonic() + give_up_s
    rng = random.Random()
    for failures in itertools.count(1):
        try:
            return list(consumer.committed(tps, timeout=30))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if (code not in transient and not (isinstance(err, KafkaError) and err.retriable())) \
                    or time.monotonic() > deadline:
                raise
            delay = backoff_delay(failures, 0.5, 5.0, rng)
            logger.warning("committed offsets not readable yet (%s); retrying in %.1f s", err, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def start_offsets(consumer: Any, tps: list[tuple[str, int]], resume: Resume, start_from: str) -> Resume:
    """Where each topic-partition starts: its resume offset, else what ``start_from`` says (see the module docstring).
    """
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    out: Resume = {f"{t}:{p}": resume[f"{t}:{p}"] for t, p in tps if f"{t}:{p}" in resume}
    fresh = [(t, p) for t, p in tps if f"{t}:{p}" not in out]
    if not fresh:
        return out
    if start_from == "committed":
        committed = _committed(consumer, [TopicPartition(t, p) for t, p in fresh])
        for tp in committed:
            out[f"{tp.topic}:{tp.partition}"] = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        logger.info("no recovery state: starting at the committed offsets %s (-2: the beginning)",
                    {f"{t}:{p}": out[f"{t}:{p}"] for t, p in fresh})
    else:
        for t, p in fresh:
            out[f"{t}:{p}"] = OFFSET_BEGINNING if start_from == "earliest" else OFFSET_END
    return out


class AlignedKafkaSource(FixedPartitionedSource[Chunk, Resume]):
    """Partition ``p`` of every topic in one Bytewax partition, merged in event time (see the module docstring)."""

    def __init__(self, conf: dict[str, Any], topics: list[str], tail: bool = True, batch_size: int = 5000,
                 idle_s: float = 2.0, start_from: str = "committed", commit_every_s: float = 5.0,
                 lag_every_s: float = 10.0) -> None:
        self.conf = conf
        self.idle_s = idle_s
        self.start_from, self.commit_every_s, self.lag_every_s = start_from, commit_every_s, lag_every_s
        self.topics = topics
        self.tail = tail
        self.batch_size = batch_size

    def _partitions(self) -> dict[str, int]:
        from confluent_kafka.admin import AdminClient

        meta = AdminClient(dict[str, Any](self.conf)).list_topics(timeout=30).topics
        missing = [t for t in self.topics if t not in meta]
        if missing:
            from ccf.errors import ConfigError

            raise ConfigError(f"Kafka topics {missing} do not exist (is flows.ingest running against this broker?)")
        return {t: len(meta[t].partitions) for t in self.topics}

    def list_parts(self) -> list[str]:
        return [f"p{p}" for p in range(max(self._partitions().values()))]

    def build_part(self, step_id: str, for_part: str, resume_state: Resume | None) -> _AlignedPartition:
        p = int(for_part[1:])
        tps = [(t, p) for t, n in self._partitions().items() if p < n]
        return _AlignedPartition(self.conf, tps, resume_state, self.tail, self.batch_size, self.idle_s,
                                 self.start_from, self.commit_every_s, self.lag_every_s)


def _existing(settings: Settings, names: tuple[str, ...]) -> tuple[str, ...]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(dict[str, Any](settings.kafka.client_config()))
    present = admin.list_topics(timeout=30).topics
    return tuple(n for n in names if settings.kafka.topic_prefix + n in present)


def raw_topics_source(settings: Settings, topics: tuple[str, ...] | None = None) -> AlignedKafkaSource:
    """Read the raw topics (``ccf.news`` too when news is enabled, and ``ccf.predictions`` when it
    exists); with ``CCF_STOP_AFTER`` set, stop at their end instead of tailing."""
    if topics is None:
        topics = (*RAW_TOPICS, "news") if settings.news.enabled else RAW_TOPICS
        topics = (*topics, *_existing(settings, OPTIONAL_TOPICS))
    conf: dict[str, Any] = dict(settings.kafka.client_config())
    conf["group.id"] = settings.kafka.group_id
    k = settings.kafka
    return AlignedKafkaSource(conf, [k.topic_prefix + t for t in topics], tail=settings.stop_after is None,
                              idle_s=k.idle_s, start_from=k.start_from, commit_every_s=k.commit_every_s,
                              lag_every_s=k.lag_every_s)
