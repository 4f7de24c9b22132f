"""The features flow's Kafka input: the raw topics ``ccf.book`` and ``ccf.trades`` as keyed chunks.

Bytewax's Kafka source does the consuming and keeps partition offsets in its recovery snapshots (exactly-once into
the flow's state with recovery on); each of its partitions is wrapped so that a batch of messages leaves as
``("venue:SYMBOL", [records])`` chunks, the same shape every in-process source emits. A message that does not
decode becomes a :class:`~ccf.errors.ParseError` in the dead-letter chunk, never a crash. Topics are keyed by
``venue:SYMBOL``, so one symbol lives in one Kafka partition and keeps its order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
from bytewax.connectors.kafka import KafkaSource
from bytewax.inputs import StatefulSourcePartition

from ccf.errors import ParseError
from ccf.schemas import decode
from ccf.settings import Settings
from ccf.sources import Chunk, chunk_by_key

logger = logging.getLogger(__name__)

RAW_TOPICS = ("book", "trades")


def decode_messages(msgs: Iterable[Any]) -> list[Chunk]:
    """Kafka messages (or Kafka errors) to keyed chunks; what does not decode goes to the dead-letter chunk."""
    items: list[Any] = []
    for m in msgs:
        value = getattr(m, "value", None)
        if value is None:
            items.append(ParseError(f"Kafka error: {getattr(m, 'err', m)}"))
            continue
        try:
            items.append(decode(value))
        except msgspec.DecodeError as exc:  # malformed JSON, or JSON that is no record (ValidationError)
            key = (m.key or b"").decode("utf-8", "replace")
            venue, _, symbol = key.partition(":")
            err = ParseError(f"{m.topic}[{m.partition}]@{m.offset}: {exc}", venue=venue, symbol=symbol, raw=value)
            stamp = getattr(m, "timestamp", None)  # (type, ms) of the Kafka message
            err.ts_recv = int(stamp[1]) * 1_000_000 if stamp and stamp[1] > 0 else 0  # type: ignore[attr-defined]
            items.append(err)
    return chunk_by_key(items)


def _existing(settings: Settings, names: tuple[str, ...]) -> tuple[str, ...]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(dict[str, Any](settings.kafka.client_config()))
    present = admin.list_topics(timeout=30).topics
    return tuple(n for n in names if settings.kafka.topic_prefix + n in present)


class _Chunking(StatefulSourcePartition[Chunk, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any]) -> None:
        self.inner = inner

    def next_batch(self) -> list[Chunk]:
        return decode_messages(self.inner.next_batch())

    def next_awake(self) -> datetime | None:
        return self.inner.next_awake()

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class ChunkedKafkaSource(KafkaSource):
    """:class:`KafkaSource` whose items are keyed chunks of decoded records."""

    # the item type changes on purpose: messages in, keyed chunks out
    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _Chunking:  # type: ignore[override]
        return _Chunking(super().build_part(step_id, for_part, resume_state))


OPTIONAL_TOPICS = ("predictions",)
"""Read when they exist: other models' forecasts (the TFT sidecar), scored by the same scorer as the baselines."""


def raw_topics_source(settings: Settings, topics: tuple[str, ...] | None = None) -> ChunkedKafkaSource:
    """Read the raw topics from the beginning (``ccf.news`` too when news is enabled, and ``ccf.predictions`` when it
    exists); with ``CCF_STOP_AFTER`` set, stop at their end instead of tailing."""
    if topics is None:
        topics = (*RAW_TOPICS, "news") if settings.news.enabled else RAW_TOPICS
        topics = (*topics, *_existing(settings, OPTIONAL_TOPICS))
    conf = settings.kafka.client_config()
    brokers = conf.pop("bootstrap.servers").split(",")
    return ChunkedKafkaSource(
        brokers=brokers,
        topics=[settings.kafka.topic_prefix + t for t in topics],
        tail=settings.stop_after is None,
        add_config=conf,
        batch_size=5000,
        raise_on_errors=False,
    )
