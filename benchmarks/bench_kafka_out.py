"""The cost of exactly-once Kafka outputs: the features sink's transactional writer against the plain idempotent
producer, same rows, same broker, same run.

Feature rows of the real ETHUSDT capture (its backtest) written to a fresh topic in batches of 1, 20 and 500 rows
(a live job writes a few rows a second per symbol; one catching up on a backlog writes hundreds per batch), each
batch one transaction (committed) or one flush: rows per second and the ratio per batch size. And what users see:
``flows.features`` catching up on the capture's raw topics with ``CCF_KAFKA__EXACTLY_ONCE`` on and off. A real Kafka broker:
``CCF_KAFKA__BOOTSTRAP_SERVERS`` when set, else one started for the run (``ccf services``) and stopped after.
``python -m benchmarks.run kafka_out`` writes ``benchmarks/results/kafka_out.json``.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BATCHES = (1, 20, 500)
ROWS = 20_000


def _rows() -> list[Any]:
    from ccf.capture.readers import read_records
    from ccf.engine import EngineConfig, SymbolEngine
    from ccf.features.bookkeeper import SyncedBook

    data = Path(os.environ.get("CCF_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    records = list(read_records([data / "hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz"]))
    eng = SymbolEngine("binance", "ETH-USDT", SyncedBook("binance", "ETH-USDT"), EngineConfig(models=()))
    rows = eng.on_batch([r[0] if isinstance(r, tuple) else r for r in records]).rows + eng.on_eof().rows
    return [rows[i % len(rows)] for i in range(ROWS)]


def _write(bootstrap: str, rows: list[Any], batch: int, transactional: bool) -> float:
    from ccf.settings import KafkaSettings, Settings
    from ccf.store.kafka_out import KafkaWriter

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    s = Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix))
    writer = KafkaWriter(s, transactional_id=f"bench-{prefix}" if transactional else None)
    writer.send("features", rows[:1])  # topic created, connection warm
    writer.flush()
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        writer.send("features", rows[i:i + batch])
        writer.flush()
    took = time.perf_counter() - t0
    writer.close()
    return len(rows) / took


def _publish(bootstrap: str, prefix: str, records: list[Any]) -> None:
    from confluent_kafka import Producer

    from ccf.schemas import BookDelta, BookSnapshot, Trade, encode, record_key

    prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for r in records:
        if isinstance(r, BookDelta | BookSnapshot | Trade):
            prod.produce(prefix + ("trades" if isinstance(r, Trade) else "book"), encode(r), key=record_key(r))
            prod.poll(0)
    prod.flush(60)


def _flow(bootstrap: str, records: list[Any], exactly_once: bool) -> dict[str, float]:
    """``flows.features`` catching up on the capture's raw topics (a backlog), Kafka outputs on, embedded store."""
    from bytewax.testing import run_main

    from ccf.settings import KafkaSettings, QuestDBSettings, Settings, StoreSettings
    from flows.features import build_flow

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    _publish(bootstrap, prefix, records)
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(stop_after=1e12, store=StoreSettings(path=Path(tmp) / "store.duckdb"), questdb=QuestDBSettings(),
                     kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, exactly_once=exactly_once,
                                         group_id=prefix + "g"))
        t0 = time.perf_counter()
        run_main(build_flow(s))
        took = time.perf_counter() - t0
    return {"seconds": round(took, 2), "records_per_s": round(len(records) / took)}


def run() -> dict[str, Any]:
    from ccf.services.manager import ServiceManager
    from ccf.services.state import env_vars

    rows = _rows()
    bootstrap = os.environ.get("CCF_KAFKA__BOOTSTRAP_SERVERS", "")
    manager = None
    if not bootstrap:
        manager = ServiceManager(Path(tempfile.mkdtemp(prefix="ccf-bench-kafka-")))
        bootstrap = env_vars(manager.up(["kafka"]))["CCF_KAFKA__BOOTSTRAP_SERVERS"]
    try:
        out: dict[str, Any] = {"rows": len(rows), "by_batch_rows": {}}
        for batch in BATCHES:
            n = min(len(rows), 100 * batch)  # 100 batches of each size
            plain = _write(bootstrap, rows[:n], batch, transactional=False)
            txn = _write(bootstrap, rows[:n], batch, transactional=True)
            out["by_batch_rows"][str(batch)] = {"plain_rows_per_s": round(plain), "transactional_rows_per_s": round(txn),
                                                "transactional_over_plain": round(txn / plain, 3)}
        from ccf.capture.readers import read_records

        data = Path(os.environ.get("CCF_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
        records = [r[0] if isinstance(r, tuple) else r for r in read_records(
            [data / "hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz",
             data / "hftbacktest_binance_raw_ws/spot_ethusdt_20240809.gz"])]
        runs = {"plain": [], "exactly_once": []}
        for _ in range(2):  # alternated, best of two: the machine is noisy
            runs["plain"].append(_flow(bootstrap, records, False))
            runs["exactly_once"].append(_flow(bootstrap, records, True))
        best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
        out["features_flow_backlog"] = {"records": len(records), **best, "exactly_once_over_plain": round(
            best["exactly_once"]["records_per_s"] / best["plain"]["records_per_s"], 3)}
        return out
    finally:
        if manager is not None:
            manager.down(["kafka"])
