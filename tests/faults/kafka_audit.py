"""What the ingest job put on Kafka: every message of the raw topics, read back whole with a plain Consumer.

* trade ids on ``<prefix>trades`` must be contiguous (Binance numbers a symbol's trades one by one), once each;
* depth updates on ``<prefix>book`` must chain (``U == previous u + 1``) except where a REST snapshot re-bases the
  book;
* the event-time ranges where either broke are the :class:`~tests.faults.compare.Outage` s whose windows may differ
  (and must then say ``book_valid = false``).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from typing import Any

import orjson

from tests.faults.compare import Outage


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0, committed: bool = False) -> list[bytes]:
    """Every message value of ``topic`` (all partitions, from the beginning), in partition order; only those of
    committed transactions when ``committed`` (``isolation.level=read_committed``, as a downstream consumer)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"audit-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed" if committed else "read_uncommitted"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign(parts)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(10000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise RuntimeError(f"reading {topic}: {err}")
                out.append(m.value())
        if pending:
            raise TimeoutError(f"{topic}: no end of partition {pending} within {timeout_s:.0f} s")
        return out
    finally:
        consumer.close()


def outputs(bootstrap: str, prefix: str) -> dict[str, Any]:
    """The features job's Kafka outputs as a ``read_committed`` consumer sees them: messages, distinct keys, and
    the keys seen more than once (each output row must come once, across every kill and restart)."""
    from ccf.schemas import decode
    from tests.faults.reference import KEYS

    out: dict[str, Any] = {}
    for table, keys in KEYS.items():
        try:
            values = read_topic(bootstrap, prefix + table, committed=True)
        except KeyError:  # never created: nothing was written
            values = []
        seen = Counter(tuple(getattr(rec, k) for k in keys) for rec in map(decode, values))
        twice = {k: n for k, n in seen.items() if n > 1}
        out[table] = {"messages": len(values), "keys": len(seen), "duplicated": sum(n - 1 for n in twice.values()),
                      "duplicated_sample": [list(map(str, k)) for k in list(twice)[:3]]}
    return out


def audit(bootstrap: str, prefix: str) -> tuple[dict[str, Any], list[Outage]]:
    """Figures on the raw topics, and the outages they show."""
    from ccf.schemas import BookDelta, BookSnapshot, BookTop, Trade, decode

    trades = [decode(v) for v in read_topic(bootstrap, prefix + "trades")]
    book = [decode(v) for v in read_topic(bootstrap, prefix + "book")]
    health = [orjson.loads(v) for v in read_topic(bootstrap, prefix + "health")]
    outages: list[Outage] = []

    ids = [int(t.trade_id) for t in trades if isinstance(t, Trade)]
    counts = Counter(ids)
    gaps = []
    prev: Trade | None = None
    for t in trades:
        assert isinstance(t, Trade)
        if prev is not None and int(t.trade_id) > int(prev.trade_id) + 1:
            gaps.append({"after_id": int(prev.trade_id), "next_id": int(t.trade_id),
                         "lost": int(t.trade_id) - int(prev.trade_id) - 1})
            outages.append(Outage(prev.ts_event, t.ts_event, f"trade ids {prev.trade_id}..{t.trade_id}"))
        prev = t if prev is None or int(t.trade_id) > int(prev.trade_id) else prev
    backwards = sum(1 for a, b in itertools.pairwise(ids) if b <= a)

    deltas = [r for r in book if isinstance(r, BookDelta)]
    snaps = [r for r in book if isinstance(r, BookSnapshot) and not r.checkpoint]
    checkpoint_ts = [r.ts_event for r in book if isinstance(r, BookSnapshot) and r.checkpoint]
    tops = [r for r in book if isinstance(r, BookTop)]
    breaks = []
    last_u: int | None = None
    last_ts: int | None = None
    broken_since: int | None = None
    for r in book:
        if isinstance(r, BookSnapshot) and r.checkpoint:
            continue  # a copy of the book in sync: it mends nothing a gap broke
        if isinstance(r, BookSnapshot):
            if broken_since is not None:
                outages.append(Outage(broken_since, r.ts_event, "depth gap until snapshot"))
                broken_since = None
            # the book goes on from the snapshot, or from buffered updates past it (the snapshot came late)
            last_u = max(last_u if last_u is not None else -1, r.last_update_id)
            continue
        if not isinstance(r, BookDelta):
            continue
        first, lastid = r.first_update_id, r.last_update_id
        if last_u is not None and first is not None and lastid is not None and lastid > last_u \
                and first > last_u + 1 and broken_since is None:
            breaks.append({"after_u": last_u, "U": first, "lost_ids": first - last_u - 1})
            broken_since = last_ts if last_ts is not None else r.ts_event
        if lastid is not None and (last_u is None or lastid > last_u):
            last_u = lastid
        last_ts = r.ts_event
    if broken_since is not None:
        outages.append(Outage(broken_since, 2**62, "depth gap never re-based"))
    first_delta = next((r for r in book if isinstance(r, BookDelta)), None)
    if snaps and first_delta is not None and first_delta.ts_event < snaps[0].ts_event:
        # the book of a session is unknown until its first snapshot arrives: the capture's came within 116 ms
        # (local clock) of the first diff, a live REST answer comes when it comes
        outages.append(Outage(first_delta.ts_event, snaps[0].ts_event, "session start: depth updates before the "
                              f"first snapshot (lastUpdateId {snaps[0].last_update_id})"))

    kinds = Counter(h.get("kind") for h in health)
    resyncs = [{"reason": h.get("reason"), "detail": str(h.get("detail", ""))[:120]} for h in health
               if h.get("kind") == "resync"]
    figures = {
        "trades": len(ids),
        "trade_ids_unique": len(counts),
        "trade_id_duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "trade_id_gaps": len(gaps),
        "trades_lost": sum(g["lost"] for g in gaps),
        "trade_ids_backwards": backwards,
        "trade_ids_contiguous": not gaps and len(counts) == len(ids) and not backwards,
        "trade_gap_sample": gaps[:5],
        "depth_updates": len(deltas),
        "depth_breaks": len(breaks),
        "depth_break_sample": breaks[:5],
        "snapshots": len(snaps),
        "checkpoints": len(checkpoint_ts),
        "checkpoint_ts": checkpoint_ts,
        "book_tops": len(tops),
        "health_kinds": dict(kinds),
        "resyncs": resyncs[:10],
        "tops_without_venue_time": sum(1 for t in tops if t.ts_event == 0),
    }
    return figures, merge(outages)


def merge(outages: list[Outage]) -> list[Outage]:
    out: list[Outage] = []
    for o in sorted(outages, key=lambda o: o.start):
        if out and o.start <= out[-1].end:
            last = out.pop()
            out.append(Outage(last.start, max(last.end, o.end), f"{last.why}; {o.why}"))
        else:
            out.append(o)
    return out
