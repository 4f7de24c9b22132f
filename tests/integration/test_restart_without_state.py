"""A features job restarted without recovery state, as users run it, never rewrites a row the store holds.

``python -m bytewax.run flows.features`` reads the raw topics to their end (``CCF_STOP_AFTER``) and commits its
offsets; more data arrives; the job starts again with no recovery directory (a new container): it begins at the
committed offsets, and every row the first run wrote keeps its values; started from the beginning instead
(``CCF_KAFKA__START_FROM=earliest``), it recomputes everything and writes none of it again, to QuestDB or Kafka.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ccf.schemas import decode, encode, record_key
from ccf.settings import Settings
from ccf.store.tables import SCORES, features_table, predictions_table
from tests.integration.test_features_services import isolated, qdb, synthetic_records, wait_rows  # noqa: F401
from tests.integration.test_features_services import wal_applied as _settled

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
TABLES = ("features", "predictions", "scores")
KEYS = {t.name: ", ".join(t.keys) for t in (features_table(), predictions_table(), SCORES)}


def _publish(s: Settings, records: list[Any]) -> None:
    prod = Producer({"bootstrap.servers": s.kafka.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
    for r in records:
        topic = "trades" if type(r).__name__ == "Trade" else "book"
        prod.produce(s.kafka.topic_prefix + topic, encode(r), key=record_key(r))
    assert prod.flush(30) == 0


def _run(s: Settings, tmp: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env.update({"CCF_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers, "CCF_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
                "CCF_QUESTDB__HTTP_URL": s.questdb.http_url, "CCF_QUESTDB__TABLE_PREFIX": s.questdb.table_prefix,
                "CCF_VENUES__SYMBOLS": '["BTC-USDT", "ETH-USDT"]', "CCF_STOP_AFTER": "1e9", "CCF_RUN_DIR": str(tmp),
                "PYTHONPATH": str(ROOT), **extra})
    done = subprocess.run([sys.executable, "-m", "bytewax.run", "flows.features"], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _written(summary: str) -> int:
    m = re.search(r"ccf features: (\d+) feature rows", summary)
    assert m, summary
    return int(m.group(1))


def _kept(s: Settings, table: str, before: list[list[Any]], now: list[list[Any]]) -> None:
    """Every row held ``before`` is still held, with the same values, and no key is held twice."""
    keys = qdb(s.questdb.http_url, f'select {KEYS[table]} from "{s.questdb.table_prefix}{table}"')
    assert len({tuple(k) for k in keys}) == len(keys) == len(now), f"{table}: duplicate keys"
    assert [r for r in now if r in before] == before, f"{table}: rows held before changed"


def _rows(s: Settings, table: str) -> list[list[Any]]:
    return qdb(s.questdb.http_url, f'select * from "{s.questdb.table_prefix}{table}" order by 1, 2, 3, 4')


def _kafka_keys(s: Settings) -> list[tuple[str, int]]:
    cons = Consumer({"bootstrap.servers": s.kafka.bootstrap_servers, "group.id": uuid.uuid4().hex,
                     "auto.offset.reset": "earliest", "enable.partition.eof": True})
    topic = s.kafka.topic_prefix + "features"
    cons.assign([TopicPartition(topic, p, -2) for p in range(2)])
    keys: list[tuple[str, int]] = []
    ended: set[int] = set()
    while len(ended) < 2:
        m = cons.poll(5)
        assert m is not None, "ccf.features did not reach its end"
        if m.error() is not None:
            ended.add(m.partition())
            continue
        rec = decode(m.value())
        keys.append((rec.symbol, rec.window_start))  # type: ignore[union-attr]
    cons.close()
    return keys


def test_a_restart_without_recovery_state_never_rewrites_good_rows(
    isolated: Settings, tmp_path: Path  # noqa: F811
) -> None:
    s = isolated
    records = synthetic_records(60, ["BTC-USDT", "ETH-USDT"])
    cut = records[0].ts_event + 40 * 10**9
    _publish(s, [r for r in records if r.ts_event < cut])
    _run(s, tmp_path)
    assert wait_rows(s.questdb.http_url, s.questdb.table_prefix + "features", 80) == 80  # 40 1-s windows each
    _settled(s)
    first = {t: _rows(s, t) for t in TABLES}

    # more data, then a fresh start (no recovery dir): from the committed offsets, not from offset 0
    _publish(s, [r for r in records if r.ts_event >= cut])
    out = _run(s, tmp_path)
    _settled(s)
    after = {t: _rows(s, t) for t in TABLES}
    for t in TABLES:
        _kept(s, t, first[t], after[t])
    assert len(after["features"]) == 120, len(after["features"])  # the 20 s that came later, once
    assert _written(out) == 40, out  # only the new windows: it did not start at offset 0

    # from the beginning: everything recomputed, nothing written again, to the store or to Kafka
    before_kafka = _kafka_keys(s)
    assert len(before_kafka) == len(set(before_kafka)) == 120
    out = _run(s, tmp_path, CCF_KAFKA__START_FROM="earliest")
    assert _written(out) == 0 and "already in the store, not rewritten: 120 features" in out, out
    _settled(s)
    final = {t: _rows(s, t) for t in TABLES}
    assert final["features"] == after["features"]
    for t in ("predictions", "scores"):  # the cold start had no book, so no forecasts: those are filled in now
        _kept(s, t, after[t], final[t])
    assert _kafka_keys(s) == before_kafka


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_tailing_kafka_features_job_with_its_summary(
    isolated: Settings, tmp_path: Path, sig: signal.Signals  # noqa: F811
) -> None:
    """Tailing the raw topics (no ``CCF_STOP_AFTER``), the job ends at the next batch on SIGINT/SIGTERM, exit 0, and
    its summary counts what QuestDB holds; the open window is kept for the next run, not written half-full."""
    s = isolated
    _publish(s, synthetic_records(30, ["BTC-USDT", "ETH-USDT"]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env.update({"CCF_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers, "CCF_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
                "CCF_QUESTDB__HTTP_URL": s.questdb.http_url, "CCF_QUESTDB__TABLE_PREFIX": s.questdb.table_prefix,
                "CCF_RUN_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    job = subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.features"], env=env, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_rows(s.questdb.http_url, s.questdb.table_prefix + "features", 58, timeout=120) == 58, "not caught up"
    sent = time.monotonic()
    job.send_signal(sig)
    out, err = job.communicate(timeout=60)
    took = time.monotonic() - sent
    assert job.returncode == 0 and took < 10, (took, err[-3000:])
    assert "Traceback" not in err and "panicked" not in err, err[-3000:]
    assert _written(out) == 58, out  # 29 closed windows per symbol; the 30th is open: kept, not flushed
    _settled(s)
    assert len(_rows(s, "features")) == 58
