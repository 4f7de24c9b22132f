"""The features flow with real services: Kafka raw topics -> flow -> QuestDB + Kafka, and SIGKILL/restart equality.

News too: the shared RSS/Atom corpus served over loopback, polled by the news poller, on ``ccf.news`` -> the flow ->
the QuestDB ``news`` table (each id once, its sentiment) and the windows' ``news_count`` / ``news_sentiment``; a
second run over the same topics from the beginning (a restart without state) adds no row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from bytewax.testing import TestingSink, run_main
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ccf.errors import ParseError
from ccf.features.news import mentioned_bases
from ccf.ingest.health import dead_letter, health, ws_health
from ccf.news import NewsPoller
from ccf.news.sentiment import item_sentiment
from ccf.schemas import BookTop, NewsItem, decode, encode, record_key
from ccf.settings import Settings
from ccf.sources import NEWS_KEY, RecordSource
from ccf.synthetic import SyntheticVenue
from ccf.wsource_types import HealthEvent
from flows.features import build_flow
from tests.datafiles import data_dir
from tests.feed_server import FeedServer
from tests.schema_check import validate_values

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def qdb(http_url: str, sql: str) -> list[list[Any]]:
    body = httpx.get(f"{http_url}/exec", params={"query": sql}, timeout=30).json()
    assert "error" not in body, body
    return body["dataset"]  # type: ignore[no-any-return]


def wait_rows(http_url: str, table: str, expect: int, timeout: float = 60.0) -> int:
    """QuestDB applies WAL rows asynchronously: wait until ``table`` holds ``expect`` rows (or time runs out)."""
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        try:
            n = qdb(http_url, f'select count() from "{table}"')[0][0]
        except AssertionError:
            n = -1
        if n == expect:
            time.sleep(0.5)  # and make sure nothing more lands
            return int(qdb(http_url, f'select count() from "{table}"')[0][0])
        time.sleep(0.2)
    return n


def wal_applied(s: Settings, tables: tuple[str, ...] = ("features", "predictions", "scores")) -> None:
    """Wait until QuestDB has applied every committed write to ``tables`` (WAL is applied asynchronously)."""
    names = ", ".join(f"'{s.questdb.table_prefix}{t}'" for t in tables)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = qdb(s.questdb.http_url, f"select writerTxn, sequencerTxn from wal_tables() where name in ({names})")
        if len(rows) == len(tables) and all(w >= q for w, q in rows):
            return
        time.sleep(0.2)
    raise AssertionError(f"QuestDB did not apply the WAL of {names} in 60 s")


@pytest.fixture
def isolated(settings: Settings, services: Any) -> Iterator[Settings]:
    """Settings with uuid-named topic and table prefixes; the topics and tables are removed afterwards."""
    tag = uuid.uuid4().hex[:12]
    s = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"t{tag}."}),
            "questdb": settings.questdb.model_copy(update={"table_prefix": f"t{tag}_"}),
        }
    )
    admin = AdminClient({"bootstrap.servers": s.kafka.bootstrap_servers})
    topics = [f"t{tag}.{t}" for t in ("book", "trades", "news", "health", "dlq", "features", "predictions", "scores")]
    for f in admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1) for t in topics]).values():
        f.result(30)
    yield s
    admin.delete_topics(topics, operation_timeout=30)
    for t in ("features", "predictions", "scores", "health", "news"):
        httpx.get(f"{s.questdb.http_url}/exec", params={"query": f'DROP TABLE IF EXISTS "t{tag}_{t}"'}, timeout=30)


def synthetic_records(seconds: int, symbols: list[str]) -> list[Any]:
    venue = SyntheticVenue(symbols, seed=5)
    out: list[Any] = []
    end = None
    while True:
        batch = venue.next_batch(2000)
        if end is None:
            end = batch[0].ts_event + seconds * 1_000_000_000
        out += [r for r in batch if r.ts_event < end and not isinstance(r, BookTop)]
        if batch[-1].ts_event >= end:
            return out


def polled_news(t0: int) -> list[NewsItem]:
    """Every feed of the shared corpus served over loopback and polled once; the items' fetched times then spread
    25 ms apart from ``t0`` (one poll stamps all with one time), so they fall in many windows of the records."""
    rss = data_dir() / "rss_feeds"
    with FeedServer() as server:
        urls = [server.add("/" + p.relative_to(rss).as_posix(), p) for p in sorted(rss.rglob("*")) if p.is_file()]
        with NewsPoller(urls, max_workers=8) as poller:
            items = poller.poll_once(time.time_ns())
    return [msgspec.structs.replace(n, fetched=t0 + k * 25_000_000) for k, n in enumerate(items)]


def test_kafka_raw_topics_through_flow_to_questdb_and_kafka(isolated: Settings,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # stop_after: read the topics to their end, then stop
    s = isolated.model_copy(update={"stop_after": 1e9, "news": isolated.news.model_copy(update={"enabled": True})})
    records = synthetic_records(30, ["BTC-USDT", "ETH-USDT"])
    news = polled_news(records[0].ts_event + 2 * 10**9)
    assert len(news) > 300 and news[-1].fetched < records[-1].ts_event
    prod = Producer({"bootstrap.servers": s.kafka.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
    partitions: set[int] = set()
    for r in records:
        topic = "trades" if type(r).__name__ == "Trade" else "book"
        prod.produce(s.kafka.topic_prefix + topic, encode(r), key=record_key(r),
                     on_delivery=lambda err, msg: partitions.add(msg.partition()))
    prod.produce(s.kafka.topic_prefix + "book", b"{not json", key=b"synthetic:BTC-USDT")
    assert prod.flush(30) == 0 and len(partitions) == 1  # both symbols hash to one partition
    # the news in the symbols' partition, as in a one-partition deployment (ccf stack's default): one source
    # partition merges them with the market in time (news in another partition are not waited for: see check_news)
    (market_partition,) = partitions
    for n in news:
        prod.produce(s.kafka.topic_prefix + "news", encode(n), key=NEWS_KEY.encode(), partition=market_partition)
    # what the ingest job publishes beside the market: health entries (a reconnect, its lag report) and a dead letter
    t_h = records[0].ts_event + 5 * 10**9
    entries = {"health": [ws_health(HealthEvent("synthetic-0", 1, t_h, "disconnected", "closed 1006"), "synthetic"),
                          ws_health(HealthEvent("synthetic-0", 2, t_h + 10**9, "connected", attempt=1), "synthetic"),
                          health("role_died", "stack", "features", symbol="features", ts=t_h, value=1.0,
                                 detail="exit 137", seq=1)],
               "dlq": [dead_letter(ParseError("bad frame", venue="synthetic", symbol="ETH-USDT", raw="{"),
                                   "synthetic-0", t_h)]}
    for topic, items in entries.items():
        for e in items:
            prod.produce(s.kafka.topic_prefix + topic, json.dumps(e).encode(), key=b"synthetic:*")
    assert prod.flush(30) == 0

    # the reference: the same records through the same flow, in process
    expected: list[Any] = []
    run_main(build_flow(s.model_copy(update={"kafka": s.kafka.model_copy(update={"bootstrap_servers": ""})}),
                        source=RecordSource({"all": lambda: iter(records)}), sink=TestingSink(expected)))
    exp_rows = sorted((o.rows[i].symbol, o.rows[i].window_start) for _, o in expected for i in range(len(o.rows)))
    assert len(exp_rows) == 60

    run_main(build_flow(s))
    table = s.questdb.table_prefix + "features"
    assert wait_rows(s.questdb.http_url, table, len(exp_rows)) == len(exp_rows)
    got = qdb(s.questdb.http_url, f'select symbol, window_start, mid, trade_count, volume, ofi from "{table}" '
              "order by symbol, window_start")
    assert [(r[0], r[1]) for r in got] == [
        (sym, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ws // 10**9)) + ".000000Z") for sym, ws in exp_rows
    ]
    # the same features as in process: book and trades were merged in event time across their topics
    exp = {(o.rows[i].symbol, o.rows[i].window_start): o.rows[i].features for _, o in expected
           for i in range(len(o.rows))}
    for r, key in zip(got, exp_rows, strict=True):
        f = exp[key]
        assert abs(r[2] - f["mid"]) < 1e-9 and r[3] == f["trade_count"], (key, r, f)
        assert abs(r[4] - f["volume"]) < 1e-9 and abs(r[5] - f["ofi"]) < 1e-9, (key, r, f)
    health_rows = qdb(s.questdb.http_url, f'select kind, detail, venue, value, seq from "{s.questdb.table_prefix}health"')
    assert any(k == "ParseError" and "JSON is malformed" in str(d) for k, d, *_ in health_rows), health_rows
    # the ingest job's entries from ccf.health and ccf.dlq reach the table as the in-process connector's do
    kinds = {(k, d, v) for k, d, v, *_ in health_rows}
    assert {("disconnected", "closed 1006", "synthetic"), ("connected", "", "synthetic"),
            ("ParseError", "bad frame", "synthetic")} <= kinds, health_rows
    assert [r[3:] for r in health_rows if r[0] == "role_died"] == [[1.0, 1]]  # the stack's own seq: one row
    check_news(s, news)

    # the same rows came out on Kafka, decodable, keyed venue:SYMBOL
    cons = Consumer({"bootstrap.servers": s.kafka.bootstrap_servers, "group.id": uuid.uuid4().hex,
                     "auto.offset.reset": "earliest"})
    cons.subscribe([s.kafka.topic_prefix + t for t in ("features", "predictions", "scores", "news", "health", "dlq")])
    seen: list[Any] = []
    values: dict[str, list[bytes]] = {}
    n_preds = sum(len(o.predictions) for _, o in expected)
    deadline = time.monotonic() + 30
    want = {"predictions": n_preds, "scores": 1, "news": len(news), "health": 3, "dlq": 1}

    def missing() -> bool:
        return len(seen) < len(exp_rows) or any(len(values.get(t, ())) < n for t, n in want.items())

    while missing() and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is not None and m.error() is None:
            values.setdefault(m.topic()[len(s.kafka.topic_prefix):], []).append(m.value())
            if not m.topic().endswith("features"):
                continue
            rec = decode(m.value())
            assert m.key() == record_key(rec)  # type: ignore[arg-type]
            seen.append((rec.symbol, rec.window_start))  # type: ignore[union-attr]
    cons.close()
    assert sorted(seen) == exp_rows
    # every message on every topic this run touched, read back from the broker, validates against its schema
    checked = {t: validate_values(t, v) for t, v in values.items()}
    assert checked["features"] == len(exp_rows) and checked["predictions"] == n_preds and checked["scores"] > 0
    assert checked["news"] == len(news) and checked["health"] == 3 and checked["dlq"] == 1, checked

    # restarted without state, from the beginning of the topics: not one row more, in any table
    counts = {t: qdb(s.questdb.http_url, f'select count() from "{s.questdb.table_prefix}{t}"')[0][0]
              for t in ("features", "news", "health")}
    capsys.readouterr()
    run_main(build_flow(s.model_copy(update={"kafka": s.kafka.model_copy(update={"start_from": "earliest"})})))
    summary = capsys.readouterr().out
    assert "ccf features: 0 feature rows" in summary and ", 0 news items" in summary, summary
    assert f"not rewritten: {len(exp_rows)} features" in summary and f"{len(news)} news)" in summary, summary
    wal_applied(s, ("features", "news", "health"))
    assert {t: qdb(s.questdb.http_url, f'select count() from "{s.questdb.table_prefix}{t}"')[0][0]
            for t in counts} == counts


def check_news(s: Settings, news: list[NewsItem]) -> None:
    """The news table holds each id once, with its sentiment and bases; the windows count and score the news."""
    ids = {n.id: n for n in reversed(news)}  # the first item of an id is the one written
    table = s.questdb.table_prefix + "news"
    assert wait_rows(s.questdb.http_url, table, len(ids)) == len(ids)
    rows = qdb(s.questdb.http_url, f'select id, sentiment, bases, feed from "{table}"')
    assert sorted(r[0] for r in rows) == sorted(ids)
    sentiments = [r[1] for r in rows]
    assert all(-1.0 <= x <= 1.0 for x in sentiments) and min(sentiments) < -0.3 and max(sentiments) > 0.3
    for id_, sentiment, bases, feed in rows:
        item = ids[id_]
        assert sentiment == item_sentiment(item) and bases == ",".join(sorted(mentioned_bases(item)))
        assert feed == item.feed
    # every item naming a symbol's base (each id once in the table, but every item in the windows) counts in the
    # window of its fetched time, with its sentiment; none is late: one source partition merges news and market in
    # time (news on a partition of their own are not waited for: in a backlog they come late for the others' windows)
    feats = qdb(s.questdb.http_url, f'select symbol, window_start, news_count, news_sentiment '
                f'from "{s.questdb.table_prefix}features" where news_count > 0')
    want: dict[tuple[str, str], list[float]] = {}
    for n in news:
        for symbol in ("BTC-USDT", "ETH-USDT"):
            if symbol.split("-")[0] in mentioned_bases(n):
                start = n.fetched - n.fetched % 10**9
                key = (symbol, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start // 10**9)) + ".000000Z")
                want.setdefault(key, []).append(item_sentiment(n))
    assert want and {(r[0], r[1]): r[2] for r in feats} == {k: len(v) for k, v in want.items()}
    for symbol, start, _, sentiment in feats:
        assert abs(sentiment - sum(want[symbol, start]) / len(want[symbol, start])) < 1e-12


def _flow_env(s: Settings, store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    env.update({
        "CCF_QUESTDB__HTTP_URL": s.questdb.http_url,
        "CCF_QUESTDB__TABLE_PREFIX": s.questdb.table_prefix,
        "CCF_STOP_AFTER": "90",
        "CCF_VENUES__SPEED": "15",  # 90 s of event time in about 6 s of wall time
        "CCF_VENUES__SYMBOLS": '["BTC-USDT", "ETH-USDT"]',
        "CCF_STORE__PATH": str(store),
        "PYTHONPATH": str(ROOT),
    })
    return env


def test_sigkill_and_restart_writes_exactly_the_rows_of_an_uninterrupted_run(
    isolated: Settings, tmp_path: Path
) -> None:
    s = isolated
    url = s.questdb.http_url
    # uninterrupted reference run into its own tables
    ref = s.model_copy(update={"questdb": s.questdb.model_copy(update={"table_prefix": s.questdb.table_prefix + "ref_"})})
    cmd = [sys.executable, "-m", "bytewax.run", "flows.features"]
    done = subprocess.run(cmd, env=_flow_env(ref, tmp_path / "a.duckdb"), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    rec_dir = tmp_path / "recovery"
    rec_dir.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec_dir), "1"], check=True, timeout=60)
    rcmd = [*cmd, "-r", str(rec_dir), "-s", "1", "-b", "0"]
    env = _flow_env(s, tmp_path / "b.duckdb")
    victim = subprocess.Popen(rcmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    table = s.questdb.table_prefix + "features"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it once some, not all, rows are in
        time.sleep(0.5)
        try:
            n = qdb(url, f'select count() from "{table}"')[0][0]
        except AssertionError:
            continue
        if n >= 40:
            break
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    resumed = subprocess.run(rcmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    n_ref = wait_rows(url, s.questdb.table_prefix + "ref_features", 180)
    assert n_ref == 180
    assert wait_rows(url, table, n_ref) == n_ref
    cols = "symbol, window_start, window_end, mid, ofi, volume, trade_count, book_valid, epoch"
    want = qdb(url, f'select {cols} from "{s.questdb.table_prefix}ref_features" order by symbol, window_start')
    got = qdb(url, f'select {cols} from "{table}" order by symbol, window_start')
    assert got == want
    for t in ("predictions", "scores"):
        a = qdb(url, f'select count() from "{s.questdb.table_prefix}ref_{t}"')[0][0]
        assert wait_rows(url, s.questdb.table_prefix + t, a) == a


def test_tft_predictions_on_kafka_are_scored_with_the_baselines(isolated: Settings) -> None:
    from ccf.schemas import Prediction

    s = isolated.model_copy(update={"stop_after": 1e9})
    pred_topic = s.kafka.topic_prefix + "predictions"  # the fixture made it, as the predictor's deployment does
    records = synthetic_records(20, ["ETH-USDT"])
    t0 = records[0].ts_event - records[0].ts_event % 1_000_000_000
    prod = Producer({"bootstrap.servers": s.kafka.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
    for r in records:
        topic = "trades" if type(r).__name__ == "Trade" else "book"
        prod.produce(s.kafka.topic_prefix + topic, encode(r), key=record_key(r))
    for i in range(2, 15):  # a "TFT" that forecasts zero with a wide band, issued at window ends
        p = Prediction("tft", "7", "synthetic", "ETH-USDT", 1, 1.0, t0 + i * 10**9, t0 + (i + 1) * 10**9, 0.0,
                       {"0.1": -1.0, "0.9": 1.0})
        prod.produce(pred_topic, encode(p), key=record_key(p))
    assert prod.flush(30) == 0
    run_main(build_flow(s))
    table = s.questdb.table_prefix + "scores"
    deadline = time.monotonic() + 60
    rows: list[list[Any]] = []
    while time.monotonic() < deadline and not rows:
        try:
            rows = qdb(s.questdb.http_url, f"select n, coverage, skill from \"{table}\" where model = 'tft' "
                                           "and horizon_steps = 1 order by window_end desc limit 1")
        except AssertionError:
            rows = []
        time.sleep(0.3)
    assert rows, "no score for the tft model"
    n, coverage, skill = rows[0]
    assert n == 13 and coverage == 1.0 and skill == 0.0  # a zero forecast is exactly as good as naive
