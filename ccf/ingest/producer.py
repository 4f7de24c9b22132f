"""The ingest flow's output: raw topics, health and dead letters, through an idempotent Kafka producer.

Topics (``settings.kafka.topic_prefix`` + name): ``book`` (:class:`~ccf.schemas.BookSnapshot`,
:class:`~ccf.schemas.BookDelta`, and the venue's own top of book :class:`~ccf.schemas.BookTop`, which checks the
books and must stay in order with them), ``trades``, ``klines``, ``news`` (:func:`ccf.schemas.encode` JSON), and
``health`` / ``dlq`` (JSON objects, :mod:`ccf.ingest.health`). Keys are ``venue:SYMBOL``
(:func:`ccf.schemas.record_key`), so one symbol stays in one partition and in order; news is keyed ``news:ALL``.

Delivery: :class:`ReliableProducer` is idempotent with ``acks=all``, so librdkafka's own retries (a broker restart,
a lost connection) neither duplicate nor reorder: an outage shorter than ``message_timeout_s`` (30 s) is carried
exactly once. ``send`` returns only when every message of the batch is acknowledged: a message whose delivery fails
(its ``message.timeout.ms`` ran out, or the broker refused it) is produced again, in delivery-report order, up to
``retries`` rounds with a pause between them; then :class:`~ccf.errors.SinkError` is raised, so Bytewax does not
commit the epoch and nothing is dropped silently. A recovered failure is logged and written to ``health``
(``kafka_retry``). A message produced again is new to the broker: if the broker had stored the first one and only
its acknowledgement was lost in the outage, it is there twice, next to itself (at least once; a duplicate diff is
``STALE`` to the book rule, trades carry their ``trade_id``). A fatal producer error is not retried.

>>> from ccf.schemas import Trade
>>> t = Trade("binance", "ETH-USDT", 1, 2, 2500.0, 0.5, "buy", "7")
>>> [(topic, key) for topic, key, _ in batch_messages(IngestBatch(records=[t]), Topics("ccf."))]
[('ccf.trades', b'binance:ETH-USDT')]
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from ccf.errors import SinkError
from ccf.ingest.source import IngestBatch
from ccf.schemas import BookDelta, BookSnapshot, BookTop, Kline, NewsItem, Trade, encode, record_key
from ccf.settings import Settings

logger = logging.getLogger(__name__)

KafkaMessage: TypeAlias = tuple[str, bytes, bytes]
"""``(topic, key, value)``."""

RAW_TOPICS: dict[type, str] = {BookSnapshot: "book", BookDelta: "book", BookTop: "book", Trade: "trades",
                               Kline: "klines", NewsItem: "news"}
NEWS_KEY = b"news:ALL"


class Topics:
    """Topic names with the prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.by_type = {cls: prefix + name for cls, name in RAW_TOPICS.items()}
        self.health = prefix + "health"
        self.dlq = prefix + "dlq"

    def all(self) -> list[str]:
        return sorted({*self.by_type.values(), self.health, self.dlq})


def _entry_key(entry: dict[str, Any]) -> bytes:
    return f"{entry.get('venue', '')}:{entry.get('symbol') or '*'}".encode()


def batch_messages(batch: IngestBatch, topics: Topics) -> list[KafkaMessage]:
    """One source batch as Kafka messages: records (in order), then dead letters, then health entries."""
    by_type = topics.by_type
    out: list[KafkaMessage] = [(by_type[type(r)], record_key(r), encode(r)) for r in batch.records]
    out += [(topics.dlq, _entry_key(d), orjson.dumps(d)) for d in batch.dead]
    out += [(topics.health, _entry_key(h), orjson.dumps(h)) for h in batch.health]
    return out


def news_messages(item: NewsItem, topics: Topics) -> list[KafkaMessage]:
    return [(topics.by_type[NewsItem], NEWS_KEY, encode(item))]


class ReliableProducer:
    """An idempotent ``acks=all`` producer whose :meth:`send` returns once every message is delivered (see the
    module docstring); ``producer_factory`` stands in for :class:`confluent_kafka.Producer` in tests."""

    def __init__(self, config: dict[str, Any], *, retries: int = 3, retry_backoff_s: float = 1.0,
                 message_timeout_s: float = 30.0, health_topic: str | None = None,
                 producer_factory: Callable[[dict[str, Any]], Any] | None = None) -> None:
        conf = {"linger.ms": 5, "compression.type": "lz4", **config, "enable.idempotence": True, "acks": "all",
                "message.timeout.ms": round(message_timeout_s * 1000)}
        if producer_factory is None:
            from confluent_kafka import Producer

            producer_factory = Producer
        self.producer = producer_factory(conf)
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.flush_timeout_s = message_timeout_s + 5.0  # by then every message is delivered or failed
        self.health_topic = health_topic
        self.sent: Counter[str] = Counter()
        self.retried = 0
        self._failed: list[tuple[str, bytes | None, bytes | None, Any]] = []

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failed.append((msg.topic(), msg.key(), msg.value(), err))

    def _produce(self, messages: Sequence[tuple[str, bytes | None, bytes | None]]) -> None:
        produce, report = self.producer.produce, self._report
        for topic, key, value in messages:
            while True:
                try:
                    produce(topic, value, key, on_delivery=report)
                    break
                except BufferError:  # the local queue is full: serve delivery reports, then try again
                    self.producer.poll(0.1)

    def send(self, messages: Sequence[KafkaMessage]) -> None:
        """Produce ``messages`` and return when all are acknowledged; :class:`SinkError` after ``retries`` rounds."""
        self._produce(messages)
        rounds, failures = 0, 0
        while True:
            remaining = self.producer.flush(self.flush_timeout_s)
            failed, self._failed = self._failed, []
            if not failed and not remaining:
                break
            fatal = [str(e) for *_, e in failed if getattr(e, "fatal", lambda: False)()]
            errors = sorted({str(e) for *_, e in failed})
            if fatal or rounds >= self.retries:
                raise SinkError(f"Kafka delivery failed after {rounds} retries: {len(failed)} failed, {remaining} "
                                f"undelivered of {len(messages)}; errors: {(fatal or errors)[:5]}")
            rounds += 1
            failures += len(failed)
            logger.warning("Kafka delivery: %d failed, %d undelivered (%s); producing them again (round %d/%d)",
                           len(failed), remaining, errors[:3], rounds, self.retries)
            time.sleep(self.retry_backoff_s)
            self._produce([(t, k, v) for t, k, v, _ in failed])
        if rounds:
            self.retried += failures
            if self.health_topic is not None:
                entry = {"ts": time.time_ns(), "kind": "kafka_retry", "venue": "", "symbol": "", "conn": "kafka",
                         "failed": failures, "rounds": rounds}
                self._produce([(self.health_topic, b"kafka:*", orjson.dumps(entry))])
                self.producer.flush(self.flush_timeout_s)
        self.sent.update(m[0] for m in messages)

    def close(self) -> None:
        self.producer.flush(self.flush_timeout_s)


class _KafkaPartition(StatelessSinkPartition[list[KafkaMessage]]):
    def __init__(self, producer: ReliableProducer, where: str) -> None:
        self.producer = producer
        self.where = where

    def write_batch(self, items: list[list[KafkaMessage]]) -> None:
        self.producer.send(items[0] if len(items) == 1 else [m for batch in items for m in batch])

    def close(self) -> None:
        self.producer.close()
        sent = self.producer.sent
        # the run's one-line summary (stdout: it is the job's result, not a log record)
        print(f"ccf ingest: {sum(sent.values())} messages ({', '.join(f'{t} {n}' for t, n in sorted(sent.items()))}; "
              f"{self.producer.retried} retried) -> {self.where}", flush=True)


class KafkaSink(DynamicSink[list[KafkaMessage]]):
    """Lists of ``(topic, key, value)`` to Kafka, one :class:`ReliableProducer` per worker. Items stay on the
    worker that made them, so one connection's messages keep their order."""

    def __init__(self, settings: Settings, **producer_kwargs: Any) -> None:
        self.settings = settings
        self.producer_kwargs = producer_kwargs

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaPartition:
        kafka = self.settings.kafka
        kwargs = {"health_topic": Topics(kafka.topic_prefix).health, **self.producer_kwargs}
        producer = ReliableProducer(dict(kafka.client_config()), **kwargs)
        return _KafkaPartition(producer, f"Kafka {kafka.bootstrap_servers}")
