"""``flows.features`` as a Bytewax cluster of 2 processes writes the rows of 1 process, across a SIGKILL too.

As users run it on two machines (here both on 127.0.0.1), one command per process::

    python -m bytewax.run flows.features -i 0 -a "hostA:2101;hostB:2101" [-r DIR -s 1 -b 0]
    python -m bytewax.run flows.features -i 1 -a "hostA:2101;hostB:2101" [-r DIR -s 1 -b 0]

The raw topics have 4 partitions and the 4 symbols land in 4 different ones, so each process reads 2 of the
Kafka source's 4 partitions (``p0``..``p3``) and the engines of its symbols; the one sink partition lives in one of
them. Each run has its own topics (the same records), consumer group and table prefix, so nothing one run wrote or
committed is seen by another. Run ``one``: 1 process; ``two``: a 2-process cluster; ``kill``: a 2-process cluster
with recovery (``python -m bytewax.recovery DIR 2``) that gets the first 2/3 of the records while it tails the
topics, loses one process to SIGKILL once some rows are in (the other then ends on its own: a timely cluster does
not outlive a member), and is started again on the same recovery directory once the rest is published, reading to
the end. Its features, predictions and scores equal run ``one``'s, row for row and column for column.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ccf.schemas import encode, record_key
from ccf.settings import Settings
from ccf.store.tables import SCORES, features_table, predictions_table
from tests.integration.test_features_services import qdb, synthetic_records, wait_rows
from tests.integration.test_features_services import wal_applied as _settled

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["BTC-USDT", "ETH-USDT", "DOGE-USDT", "BCH-USDT"]  # keyed synthetic:SYMBOL: partitions 3, 1, 2, 0 of 4
SECONDS = 180
ROWS = SECONDS * len(SYMBOLS)  # one 1-s feature window per symbol and second
RUNS = ("one", "two", "kill")
TABLES = ("features", "predictions", "scores")
KEYS = {t.name: ", ".join(t.keys) for t in (features_table(), predictions_table(), SCORES)}
TOPICS = ("book", "trades", "features", "predictions", "scores")
CMD = [sys.executable, "-m", "bytewax.run", "flows.features"]


@pytest.fixture
def runs(settings: Settings, services: Any) -> Iterator[dict[str, Settings]]:
    """Per run: settings with its own 4-partition topics, consumer group and table prefix; all removed afterwards."""
    tag = uuid.uuid4().hex[:10]
    out = {
        run: settings.model_copy(update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"c{tag}{run}.", "group_id": f"c{tag}{run}"}),
            "questdb": settings.questdb.model_copy(update={"table_prefix": f"c{tag}{run}_"}),
        })
        for run in RUNS
    }
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    topics = [f"c{tag}{run}.{t}" for run in RUNS for t in TOPICS]
    for f in admin.create_topics([NewTopic(t, num_partitions=4, replication_factor=1) for t in topics]).values():
        f.result(30)
    yield out
    admin.delete_topics(topics, operation_timeout=30)
    for s in out.values():
        for t in (*TABLES, "health"):
            httpx.get(f"{s.questdb.http_url}/exec", timeout=30,
                      params={"query": f'DROP TABLE IF EXISTS "{s.questdb.table_prefix}{t}"'})


def _publish(s: Settings, records: list[Any]) -> Counter[tuple[str, int]]:
    """Publish keyed ``venue:SYMBOL`` as ingest does; how many records went to each (topic, partition)."""
    prod = Producer({"bootstrap.servers": s.kafka.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
    landed: Counter[tuple[str, int]] = Counter()

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        landed[(msg.topic().rsplit(".", 1)[1], msg.partition())] += 1

    for r in records:
        topic = "trades" if type(r).__name__ == "Trade" else "book"
        prod.produce(s.kafka.topic_prefix + topic, encode(r), key=record_key(r), on_delivery=delivered)
    assert prod.flush(30) == 0
    return landed


def _env(s: Settings, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env.update({"CCF_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
                "CCF_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix, "CCF_KAFKA__GROUP_ID": s.kafka.group_id,
                "CCF_QUESTDB__HTTP_URL": s.questdb.http_url, "CCF_QUESTDB__TABLE_PREFIX": s.questdb.table_prefix,
                "CCF_VENUES__SYMBOLS": str(SYMBOLS).replace("'", '"'), "CCF_RUN_DIR": str(tmp),
                "PYTHONPATH": str(ROOT), **extra})
    return env


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


class Cluster:
    """``processes`` runs of ``python -m bytewax.run flows.features`` (``-i``/``-a`` when more than one), each
    logging to its own file."""

    def __init__(self, env: dict[str, str], tmp: Path, name: str, processes: int, *args: str) -> None:
        self.logs = [tmp / f"{name}-{i}.log" for i in range(processes)]
        self.files: list[IO[str]] = [log.open("w") for log in self.logs]
        addrs = ";".join(f"127.0.0.1:{p}" for p in _free_ports(processes))
        member = [["-i", str(i), "-a", addrs] if processes > 1 else [] for i in range(processes)]
        self.procs = [subprocess.Popen([*CMD, *args, *member[i]], env=env, cwd=tmp, stdout=f,
                                       stderr=subprocess.STDOUT, text=True) for i, f in enumerate(self.files)]

    def wait(self, timeout: float = 300) -> list[int]:
        try:
            return [p.wait(timeout) for p in self.procs]
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(30)
            for f in self.files:
                f.close()

    def end(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the processes to exit; SIGKILL what is left."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(timeout)

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n" + log.read_text()[-3000:] for log in self.logs)

    def finish(self) -> str:
        codes = self.wait()
        assert codes == [0] * len(codes), f"exit codes {codes}\n{self.output()}"
        return self.output()


def _count(s: Settings, table: str = "features") -> int:
    try:
        return int(qdb(s.questdb.http_url, f'select count() from "{s.questdb.table_prefix}{table}"')[0][0])
    except AssertionError:  # the table is not there yet
        return 0


def _rows(s: Settings, table: str) -> list[list[Any]]:
    rows = qdb(s.questdb.http_url, f'select * from "{s.questdb.table_prefix}{table}" order by {KEYS[table]}')
    keys = qdb(s.questdb.http_url, f'select {KEYS[table]} from "{s.questdb.table_prefix}{table}"')
    assert len({tuple(k) for k in keys}) == len(keys) == len(rows), f"{s.questdb.table_prefix}{table}: duplicate keys"
    return rows


def _resumable(rec_dir: Path) -> bool:
    """Whether a restart would resume every Kafka source partition from the recovery partitions: each has a snapshot
    older than the frontier of every worker of the latest execution (Bytewax's SQLite recovery store)."""
    snaps: dict[str, int] = {}
    fronts: dict[int, dict[int, int]] = {}
    for part in rec_dir.glob("part-*.sqlite3"):
        with sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=5) as db:
            for key, epoch in db.execute("select state_key, min(snap_epoch) from snaps where step_id like "
                                         "'%.records' group by state_key"):
                snaps[key] = min(epoch, snaps.get(key, epoch))
            for ex, worker, front in db.execute("select ex_num, worker_index, worker_frontier from fronts"):
                fronts.setdefault(ex, {})[worker] = front
    latest = fronts.get(max(fronts, default=-1), {})
    return len(snaps) == 4 and len(latest) == 2 and max(snaps.values()) < min(latest.values())


def _summary_rows(out: str) -> int:
    """Feature rows written, from the one-line summary of the process that held the sink partition."""
    lines = [ln for ln in out.splitlines() if ln.startswith("ccf features: ")]
    assert len(lines) == 1, out
    return int(lines[0].split()[2])


def test_a_two_process_cluster_writes_the_rows_of_one_process_and_survives_a_sigkill(
    runs: dict[str, Settings], tmp_path: Path
) -> None:
    records = synthetic_records(SECONDS, SYMBOLS)
    cut = records[0].ts_event + SECONDS * 2 // 3 * 10**9
    for run in ("one", "two"):
        landed = _publish(runs[run], records)
        assert {p for (t, p) in landed if t == "book"} == {p for (t, p) in landed if t == "trades"} == {0, 1, 2, 3}

    # (a) one process, (b) a cluster of two: both read the topics to their end and stop
    to_end = {"CCF_STOP_AFTER": "1e9"}
    one = Cluster(_env(runs["one"], tmp_path, **to_end), tmp_path, "one", 1).finish()
    assert _summary_rows(one) == ROWS, one
    two = Cluster(_env(runs["two"], tmp_path, **to_end), tmp_path, "two", 2).finish()
    assert _summary_rows(two) == ROWS, two
    assert "starting at the committed offsets" in two  # each process logs the Kafka partitions it builds

    # (c) a cluster of two with recovery: it tails the first 2/3 of the records; one process is SIGKILLed once rows
    # are in (not all of them: the rest is not published yet), the other ends on its own or is killed too
    kill = runs["kill"]
    rec_dir = tmp_path / "recovery"
    rec_dir.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec_dir), "2"], check=True, timeout=60)
    recovery = ("-r", str(rec_dir), "-s", "1", "-b", "0")
    _publish(kill, [r for r in records if r.ts_event < cut])
    first = Cluster(_env(kill, tmp_path), tmp_path, "kill-first", 2, *recovery)
    deadline = time.monotonic() + 240
    while (_count(kill) < ROWS // 6 or not _resumable(rec_dir)) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in first.procs), first.output()  # tailing: it cannot end by itself
        time.sleep(0.2)
    at_kill = _count(kill)
    assert _resumable(rec_dir) and 0 < at_kill < ROWS, (at_kill, first.output())
    os.kill(first.procs[1].pid, signal.SIGKILL)
    first.end(60)  # the survivor loses its peer and exits (a panic in timely's send thread), or is killed
    assert first.procs[1].returncode == -signal.SIGKILL

    _publish(kill, [r for r in records if r.ts_event >= cut])
    resumed = Cluster(_env(kill, tmp_path, **to_end), tmp_path, "kill-resumed", 2, *recovery).finish()
    assert "no recovery state" not in resumed, resumed  # both processes resumed from the recovery partitions
    assert 0 < _summary_rows(resumed) <= ROWS - at_kill + len(SYMBOLS), (at_kill, resumed)

    for run in RUNS:
        assert wait_rows(runs[run].questdb.http_url, runs[run].questdb.table_prefix + "features", ROWS) == ROWS, run
        _settled(runs[run])
    want = {t: _rows(runs["one"], t) for t in TABLES}
    assert len(want["predictions"]) > 0 and len(want["scores"]) > 0
    for run in ("two", "kill"):
        for t in TABLES:
            got = _rows(runs[run], t)
            assert len(got) == len(want[t]), (run, t, len(got), len(want[t]))
            assert got == want[t], (run, t, next((a, b) for a, b in zip(got, want[t], strict=True) if a != b))
