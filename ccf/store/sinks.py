"""Bytewax sinks for what the features flow produces (:class:`ccf.engine.EngineOut`).

One sink partition writes every table (so the embedded DuckDB store has one writer); it fans out to the configured
writers: QuestDB or the embedded store, and Kafka when configured. Delivery is at-least-once with idempotent
tables: a batch is written before Bytewax commits the epoch, and a replayed batch upserts the same keys.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from ccf.engine import EngineOut
from ccf.schemas import FeatureRow, Prediction, Score, encode, record_key
from ccf.settings import Settings
from ccf.store.tables import (
    HEALTH,
    SCORES,
    Table,
    feature_row_values,
    features_table,
    prediction_values,
    predictions_table,
    score_values,
)

logger = logging.getLogger(__name__)


class Writer(Protocol):
    def upsert(self, table: str, rows: Sequence[dict[str, Any]]) -> int: ...

    def close(self) -> None: ...


def all_tables(settings: Settings) -> list[Table]:
    return [
        features_table(settings.features.depth_levels),
        predictions_table(settings.forecast.quantiles),
        SCORES,
        HEALTH,
    ]


def health_rows(out: EngineOut) -> list[dict[str, Any]]:
    """Problems one row each; late records summed per symbol and type (one row at the latest late event time)."""
    rows = [
        {
            "ts": int(p.get("ts") or 0),
            "venue": p.get("venue", ""),
            "symbol": p.get("symbol", ""),
            "kind": p.get("error", "problem"),
            "value": 1.0,
            "detail": str(p.get("reason", ""))[:500],
        }
        for p in out.problems
    ]
    late: dict[tuple[str, str, str], list[int]] = {}
    for rec in out.late:
        key = (getattr(rec, "venue", "news"), getattr(rec, "symbol", "ALL"), "late_" + type(rec).__name__.lower())
        ts = getattr(rec, "ts_event", None) or getattr(rec, "fetched", 0)
        late.setdefault(key, []).append(int(ts or 0))
    for (venue, symbol, kind), stamps in late.items():
        rows.append({"ts": max(stamps), "venue": venue, "symbol": symbol, "kind": kind, "value": float(len(stamps)),
                     "detail": ""})
    return rows


class KafkaWriter:
    """Features, predictions and scores to ``ccf.features`` / ``ccf.predictions`` / ``ccf.scores``, keyed
    ``venue:SYMBOL``, idempotent producer with ``acks=all``; a batch is flushed and every delivery checked."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Producer

        conf: dict[str, Any] = dict(settings.kafka.client_config())
        conf.update({"enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "lz4"})
        self.prefix = settings.kafka.topic_prefix
        self.producer = Producer(conf)
        self.errors: list[str] = []

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")

    def send(self, topic: str, records: Sequence[FeatureRow | Prediction | Score]) -> None:
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
        remaining = self.producer.flush(60)
        if remaining or self.errors:
            errors, self.errors = self.errors, []
            from ccf.errors import SinkError

            raise SinkError(f"Kafka delivery failed: {remaining} undelivered, errors: {errors[:5]}")

    def close(self) -> None:
        self.producer.flush(30)


class _OutputPartition(StatefulSinkPartition[EngineOut, None]):
    def __init__(self, store: Writer, kafka: KafkaWriter | None, quantiles: Sequence[float], where: str) -> None:
        self.store = store
        self.kafka = kafka
        self.quantiles = tuple(quantiles)
        self.where = where
        self.written = {"features": 0, "predictions": 0, "scores": 0, "health": 0}
        self.symbols: set[str] = set()

    def write_batch(self, items: list[EngineOut]) -> None:
        rows = [r for o in items for r in o.rows]
        preds = [p for o in items for p in o.predictions]
        scores = [s for o in items for s in o.scores]
        health = [h for o in items for h in health_rows(o)]
        self.symbols.update(f"{r.venue}:{r.symbol}" for r in rows)
        self.written["features"] += self.store.upsert("features", [feature_row_values(r) for r in rows])
        self.written["predictions"] += self.store.upsert(
            "predictions", [prediction_values(p, self.quantiles) for p in preds]
        )
        self.written["scores"] += self.store.upsert("scores", [score_values(s) for s in scores])
        self.written["health"] += self.store.upsert("health", health)
        if self.kafka is not None:
            self.kafka.send("features", rows)
            self.kafka.send("predictions", preds)
            self.kafka.send("scores", scores)
            self.kafka.flush()

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        w = self.written
        # the run's one-line summary (stdout: it is the job's result, not a log record)
        print(
            f"ccf features: {w['features']} feature rows, {w['predictions']} predictions, {w['scores']} scores, "
            f"{w['health']} health rows for {len(self.symbols)} symbols ({', '.join(sorted(self.symbols))}) "
            f"-> {self.where}",
            flush=True,
        )
        self.store.close()
        if self.kafka is not None:
            self.kafka.close()


def open_store(settings: Settings) -> Writer:
    """QuestDB when configured, else the embedded DuckDB file."""
    tables = all_tables(settings)
    if settings.questdb.enabled:
        from ccf.store.questdb_store import QuestDBWriter

        q = settings.questdb
        return QuestDBWriter(q.http_url, tables, ilp_url=q.ilp_url, table_prefix=q.table_prefix)
    from ccf.store.duckdb_store import DuckDBStore

    return DuckDBStore(settings.store.path, tables)


class OutputSink(FixedPartitionedSink[EngineOut, None]):
    """Every output of the features flow, through one partition. Items are ``(key, EngineOut)``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        return ["outputs"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OutputPartition:
        s = self.settings
        kafka = KafkaWriter(s) if s.kafka.enabled else None
        where = f"QuestDB {s.questdb.http_url}" if s.questdb.enabled else f"embedded store {s.store.path}"
        if kafka is not None:
            where += f" + Kafka {s.kafka.bootstrap_servers}"
        return _OutputPartition(open_store(s), kafka, s.forecast.quantiles, where)
