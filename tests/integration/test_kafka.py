"""The session's Kafka for real: idempotent keyed produce, manual commits, resume in the same group, per-key order."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from ccf.settings import Settings

pytestmark = pytest.mark.integration

N_MESSAGES = 10_000
N_KEYS = 37
PARTITIONS = 4
FIRST_CONSUMER_TAKES = 4_000


def _produce(settings: Settings, topic: str) -> dict[str, list[int]]:
    """Produce N_MESSAGES keyed ``key:seq`` values; return the sequence numbers sent per key, in order."""
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    sent: dict[str, list[int]] = defaultdict(list)
    delivered: list[tuple[str, int]] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.key().decode(), msg.partition()))

    for i in range(N_MESSAGES):
        key = f"k{i % N_KEYS:02d}"
        seq = len(sent[key])
        sent[key].append(seq)
        while True:
            try:
                producer.produce(topic, key=key, value=f"{key}:{seq}", on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still queued after flush"
    assert errors == []
    assert len(delivered) == N_MESSAGES
    partitions_of_key = defaultdict(set)
    for key, partition in delivered:
        partitions_of_key[key].add(partition)
    assert all(len(p) == 1 for p in partitions_of_key.values()), "a key landed on two partitions"
    assert len({p for ps in partitions_of_key.values() for p in ps}) > 1, "keys did not spread over partitions"
    return sent


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
        }
    )


def _consume(
    consumer: Consumer, topic: str, want: int, seen: list[tuple[str, int, int, int]], timeout_s: float = 60
) -> None:
    """Append ``(key, seq, partition, offset)`` for the next ``want`` messages and commit exactly those."""
    next_offsets: dict[int, int] = {}
    taken = 0
    deadline = time.monotonic() + timeout_s
    while taken < want:
        assert time.monotonic() < deadline, f"only {taken} of {want} messages within {timeout_s} s"
        for msg in consumer.consume(num_messages=500, timeout=1.0):
            assert msg.error() is None, msg.error()
            key, seq = msg.value().decode().split(":")
            assert key == msg.key().decode()
            seen.append((key, int(seq), msg.partition(), msg.offset()))
            next_offsets[msg.partition()] = msg.offset() + 1
            taken += 1
            if taken == want:
                break
    offsets = [TopicPartition(topic, p, o) for p, o in sorted(next_offsets.items())]
    consumer.commit(offsets=offsets, asynchronous=False)


def test_idempotent_produce_then_resume_from_committed_offsets(
    settings: Settings, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(PARTITIONS)
    sent = _produce(settings, topic)
    group = f"test-group-{uuid.uuid4().hex}"
    seen: list[tuple[str, int, int, int]] = []

    first = _consumer(settings, group)
    first.subscribe([topic])
    _consume(first, topic, FIRST_CONSUMER_TAKES, seen)
    committed_by_first = {
        tp.partition: tp.offset for tp in first.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], 10)
    }
    first.close()

    second = _consumer(settings, group)
    second.subscribe([topic])
    try:
        before = len(seen)
        _consume(second, topic, N_MESSAGES - FIRST_CONSUMER_TAKES, seen)
        # the second consumer started each partition exactly where the first one committed
        first_offsets: dict[int, int] = {}
        for _, _, partition, offset in seen[before:]:
            first_offsets.setdefault(partition, offset)
        for partition, offset in first_offsets.items():
            assert offset == max(committed_by_first[partition], 0)
        # nothing more is waiting: every message was seen once
        assert second.consume(num_messages=10, timeout=2.0) == []
    finally:
        second.close()

    pairs = [(key, seq) for key, seq, _, _ in seen]
    assert len(pairs) == N_MESSAGES
    assert len(set(pairs)) == N_MESSAGES, "a message was seen twice"
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, seq in pairs:
        by_key[key].append(seq)
    assert by_key == sent  # every message, and per key in the order produced
