"""The features job's Kafka outputs: ``ccf.features`` / ``ccf.predictions`` / ``ccf.scores``, keyed ``venue:SYMBOL``.

Made with a ``transactional_id`` (the features job's sink), each batch is one Kafka transaction: a consumer that
reads with ``isolation.level=read_committed`` sees a batch whole or not at all, and a job killed mid-batch leaves
nothing it would write again (the next producer with the same id fences the old one and aborts its transaction).
What a restarted job recomputes is not sent again either: the sink drops rows at or before what was already
committed (:func:`tail_marks`, the newest key times in the last committed messages of each partition, with the
store's own marks; see :mod:`ccf.store.high_water`). Without an id (the TFT predictor): an idempotent producer,
``acks=all``, each batch flushed and every delivery checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ccf.errors import SinkError
from ccf.schemas import FeatureRow, Prediction, Score, decode, encode, record_key
from ccf.settings import Settings
from ccf.store.high_water import GUARDED, Marks

logger = logging.getLogger(__name__)

TAIL = 20_000
"""Messages read back from the end of each partition for :func:`tail_marks` (far more than one batch)."""


class KafkaWriter:
    """Records to ``<prefix><topic>``; transactional per batch when made with a ``transactional_id``."""

    def __init__(self, settings: Settings, transactional_id: str | None = None, commit_timeout_s: float = 120.0) -> None:
        from confluent_kafka import Producer

        conf: dict[str, Any] = dict(settings.kafka.client_config())
        conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "lz4"})
        if transactional_id:
            conf["transactional.id"] = transactional_id
        self.prefix = settings.kafka.topic_prefix
        self.producer = Producer(conf)
        self.errors: list[str] = []
        self.transactional = bool(transactional_id)
        self.commit_timeout_s = commit_timeout_s
        self._open = False
        if self.transactional:
            self._call(lambda: self.producer.init_transactions(30), "starting its transactions")

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")

    def send(self, topic: str, records: Sequence[FeatureRow | Prediction | Score]) -> None:
        if not records:
            return
        if self.transactional and not self._open:
            self.producer.begin_transaction()
            self._open = True
        for rec in records:
            while True:
                try:
                    self.producer.produce(
                        self.prefix + topic, encode(rec), key=record_key(rec), on_delivery=self._delivered
                    )
                    break
                except BufferError:  # local queue full: serve delivery reports, then retry
                    self.producer.poll(0.1)

    def flush(self) -> None:
        """Deliver what was sent (and commit its transaction); :class:`SinkError` when that fails."""
        if self.transactional:
            if self._open:
                self._commit()
            return
        remaining = self.producer.flush(60)
        if remaining or self.errors:
            errors, self.errors = self.errors, []
            raise SinkError(f"Kafka delivery failed: {remaining} undelivered, errors: {errors[:5]}")

    def _commit(self) -> None:
        from confluent_kafka import KafkaException

        try:
            self._call(lambda: self.producer.commit_transaction(30), "committing a batch")
        except SinkError as exc:
            cause = exc.__cause__
            if isinstance(cause, KafkaException) and cause.args[0].txn_requires_abort():
                self.producer.abort_transaction(30)
            raise
        finally:
            self._open = False
        if self.errors:
            errors, self.errors = self.errors, []
            raise SinkError(f"Kafka delivery failed in a committed batch: {errors[:5]}")

    def _call(self, fn: Any, what: str) -> None:
        """``fn()``, retried while Kafka calls its error retriable (a broker restarting), for ``commit_timeout_s``."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.commit_timeout_s
        while True:
            try:
                fn()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or time.monotonic() > deadline:
                    hint = " (another features job with the same CCF_KAFKA__GROUP_ID and prefix?)" \
                        if err.fatal() else ""
                    raise SinkError(f"Kafka producer failed {what}: {err.str()}{hint}") from exc
                logger.warning("Kafka producer %s: %s; retrying", what, err.str())
                time.sleep(1.0)

    def close(self) -> None:
        if self.transactional and self._open:
            self.producer.abort_transaction(30)
        self.producer.flush(30)


def tail_marks(settings: Settings, tables: Sequence[str] = tuple(GUARDED)) -> dict[str, Marks]:
    """The newest key time (µs) per series in the last :data:`TAIL` committed messages of each partition of each
    output topic (a batch committed just before the job died, that the store may not hold yet)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    conf: dict[str, Any] = dict(settings.kafka.client_config())
    conf.update({"group.id": f"{settings.kafka.group_id}-tail", "enable.auto.commit": False,
                 "isolation.level": "read_committed", "enable.partition.eof": True})
    consumer = Consumer(conf)
    out: dict[str, Marks] = {t: {} for t in tables}
    try:
        topics = consumer.list_topics(timeout=30).topics
        parts = []
        for table in tables:
            meta = topics.get(settings.kafka.topic_prefix + table)
            for p in (meta.partitions if meta is not None else ()):
                low, high = consumer.get_watermark_offsets(TopicPartition(meta.topic, p), timeout=30)
                if high > low:
                    parts.append(TopicPartition(meta.topic, p, max(low, high - TAIL)))
        if not parts:
            return out
        consumer.assign(parts)
        pending = {(tp.topic, tp.partition) for tp in parts}
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(5000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((m.topic(), m.partition()))
                    continue
                table = str(m.topic())[len(settings.kafka.topic_prefix):]
                ts, by = GUARDED[table]
                try:
                    rec = decode(m.value() or b"")
                    key, t = tuple(str(getattr(rec, c)) for c in by), int(getattr(rec, ts)) // 1000
                except Exception:  # not one of ours: nothing it could hold back
                    continue
                marks = out[table]
                if t > marks.get(key, -1):
                    marks[key] = t
        if pending:
            raise SinkError(f"reading back the end of Kafka's output topics timed out ({sorted(pending)[:3]})")
    finally:
        consumer.close()
    return out
