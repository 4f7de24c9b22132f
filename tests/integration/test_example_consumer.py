"""``examples/consumer.py`` against the session's Kafka: it reads committed transactions only, one line per record.

Feature rows and predictions are produced as the features job's sink does (encoded, keyed ``venue:SYMBOL``, one
Kafka transaction per batch) to uuid-prefixed topics: two committed batches around an aborted one. The example runs
as a subprocess with ``--from-beginning --max-messages``; its lines must be exactly the committed records'.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ccf.schemas import FeatureRow, Prediction, Record, Score, encode, record_key
from ccf.settings import Settings

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_723_161_260_000_000_000  # 2024-08-08T23:54:20Z
SEC = 1_000_000_000


def _row(symbol: str, i: int, mid: float | None) -> FeatureRow:
    return FeatureRow("binance", symbol, T0 + i * SEC, T0 + (i + 1) * SEC, "book.v1", True, 0,
                      {"mid": mid, "spread_bps": 0.0373})


def _pred(symbol: str, model: str, value: float, quantiles: dict[str, float] | None = None) -> Prediction:
    return Prediction(model, "online" if model != "tft" else "3", "binance", symbol, 5, 5.0, T0 + SEC, T0 + 6 * SEC,
                      value, quantiles or {})


@pytest.fixture
def prefix(settings: Settings) -> Iterator[str]:
    """A uuid prefix whose ``features`` and ``predictions`` topics exist (one partition each); deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}."
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    topics = [name + "features", name + "predictions", name + "scores"]
    for future in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]).values():
        future.result(30)
    yield name
    admin.delete_topics(topics, operation_timeout=30)


def _transaction(producer: Producer, prefix: str, records: list[Record], *, commit: bool) -> None:
    producer.begin_transaction()
    for rec in records:
        topic = {FeatureRow: "features", Prediction: "predictions", Score: "scores"}[type(rec)]
        producer.produce(prefix + topic, encode(rec), key=record_key(rec))
    if commit:
        producer.commit_transaction(30)
    else:
        producer.flush(30)  # the records are on the broker, in a transaction that is then aborted
        producer.abort_transaction(30)


def test_the_example_prints_committed_records_only(settings: Settings, prefix: str) -> None:
    producer = Producer({**settings.kafka.client_config(), "transactional.id": f"test-example-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    first: list[Record] = [_row("ETH-USDT", 0, 2683.195), _row("BTC-USDT", 0, None),
                           _pred("ETH-USDT", "naive", 0.0), _pred("ETH-USDT", "ewma", -1.25e-5),
                           Score("ewma", 5, "binance", "ETH-USDT", T0 + SEC, 40, 2.5e-5, 3.1e-5, 0.55, 1e-5, 0.8,
                                 0.0625)]
    aborted: list[Record] = [_row("ETH-USDT", 99, 1.0), _pred("ETH-USDT", "aborted", 9.0)]
    second: list[Record] = [_row("ETH-USDT", 1, 2683.2),
                            Score("naive", 5, "binance", "ETH-USDT", T0 + 2 * SEC, 41, 2.7e-5, 3.3e-5, None, None, None,
                                  0.0),
                            _pred("BTC-USDT", "tft", 2e-4, {"0.9": 5e-4, "0.1": -1e-4, "0.5": 2e-4})]
    _transaction(producer, prefix, first, commit=True)
    _transaction(producer, prefix, aborted, commit=False)
    _transaction(producer, prefix, second, commit=True)

    run = subprocess.run(
        [sys.executable, "examples/consumer.py", "--bootstrap", settings.kafka.bootstrap_servers, "--prefix", prefix,
         "--from-beginning", "--max-messages", str(len(first) + len(second)),
         "--topics", "predictions,scores,features"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line for line in lines if line.startswith("features ")] == [
        "features binance:ETH-USDT 2024-08-08T23:54:20.000Z window_s=1 set=book.v1 book_valid=True n=2 mid=2683.195",
        "features binance:BTC-USDT 2024-08-08T23:54:20.000Z window_s=1 set=book.v1 book_valid=True n=2 mid=nan",
        "features binance:ETH-USDT 2024-08-08T23:54:21.000Z window_s=1 set=book.v1 book_valid=True n=2 mid=2683.2",
    ]
    times = "issued_at=2024-08-08T23:54:21.000Z target_time=2024-08-08T23:54:26.000Z"
    assert [line for line in lines if line.startswith("prediction ")] == [
        f"prediction binance:ETH-USDT naive@online h=5 (5 s) {times} value=0",
        f"prediction binance:ETH-USDT ewma@online h=5 (5 s) {times} value=-1.25e-05",
        f"prediction binance:BTC-USDT tft@3 h=5 (5 s) {times} value=0.0002 q0.1=-0.0001 q0.5=0.0002 q0.9=0.0005",
    ]
    assert [line for line in lines if line.startswith("score ")] == [
        "score binance:ETH-USDT ewma h=5 window_end=2024-08-08T23:54:21.000Z n=40 mae=2.5e-05 skill=0.0625 coverage=0.8",
        "score binance:ETH-USDT naive h=5 window_end=2024-08-08T23:54:22.000Z n=41 mae=2.7e-05 skill=0 coverage=none",
    ]
    assert len(lines) == len(first) + len(second), run.stdout
