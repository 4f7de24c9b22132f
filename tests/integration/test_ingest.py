"""flows.ingest end to end: a real capture served by the local venue server (loopback websockets and REST) ->
the ingest flow -> real Kafka, consumed back and compared with the capture's own records.

Also: a Kafka broker restart mid-run (a dedicated broker this test owns) loses and duplicates nothing; a dropped
diff leads to a resync (a new snapshot in ``book``, ``resync`` in ``health``) and a corrupt frame lands in ``dlq``
with its raw payload; failed deliveries are produced again and raise after bounded retries; ``CCF_STOP_AFTER``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from bytewax.testing import run_main
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ccf.capture.readers import read_file
from ccf.capture.replay import BookReplayer, replay
from ccf.errors import SinkError
from ccf.ingest import links
from ccf.ingest.producer import ReliableProducer, Topics
from ccf.schemas import BookDelta, BookSnapshot, BookTop, Trade, decode
from ccf.settings import Settings
from ccf.venue_server.faults import parse_faults
from ccf.venue_server.feeds import read_capture
from ccf.venue_server.runner import ServerThread
from ccf.wsource import WsConfig
from flows.ingest import build_flow
from tests.datafiles import data_file
from tests.fakes import FakeMessage
from tests.feed_server import FeedServer
from tests.schema_check import validate_values
from tests.venue_fixtures import venue_server_factory  # noqa: F401

pytestmark = pytest.mark.integration

CAPTURE = "hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz"
CHANNELS = ["depth", "trade", "book_ticker"]
PACED = 70.0  # × real time: the capture's 5¾ minutes in about 5 s
FAST = WsConfig(backoff_initial_s=0.05, backoff_max_s=0.5, silence_timeout_s=20.0, max_tries=5, open_timeout_s=5,
                stop_on_end_of_data=True)


# ---- helpers -------------------------------------------------------------------------------------------------------


def ingest_settings(bootstrap: str, prefix: str, stop_after: float | None = None) -> Settings:
    return Settings(_env_prefix="CCF_NO_ENV_", stop_after=stop_after,  # type: ignore[call-arg]  # pydantic-settings
                    kafka={"bootstrap_servers": bootstrap, "topic_prefix": prefix},
                    venues={"source": "binance", "symbols": ["ETH-USDT"]})


def create_topics(bootstrap: str, prefix: str) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = Topics(prefix).all()
    for future in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in names]).values():
        future.result(30)
    return names


def consume(bootstrap: str, topics: list[str], timeout_s: float = 30) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every message of ``topics`` from the beginning, in partition order: ``{topic: [(key, value), ...]}``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}", "enable.auto.commit": False,
                         "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    meta = consumer.list_topics(timeout=10).topics
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in meta[t].partitions]
    consumer.assign(parts)
    out: dict[str, list[tuple[bytes, bytes]]] = {t: [] for t in topics}
    pending = {(p.topic, p.partition) for p in parts}
    deadline = time.monotonic() + timeout_s
    try:
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(5000, timeout=0.5):
                if msg.error() is not None:
                    assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                    pending.discard((msg.topic(), msg.partition()))
                    continue
                out[msg.topic()].append((msg.key(), msg.value()))
    finally:
        consumer.close()
    assert not pending, f"no end of partition for {pending}"
    return out


def content(record: Any) -> Any:
    """A record without our receipt time (spot bookTicker has no venue time either: its ts_event is ours)."""
    if isinstance(record, BookTop):
        return msgspec.structs.replace(record, ts_recv=0, ts_event=0)
    return msgspec.structs.replace(record, ts_recv=0)


def top_of_books(records: list[Any]) -> dict[tuple[str, str], Any]:
    """Every book after a replay of ``records``, as its top 200 levels (all books must end valid)."""
    replayer = BookReplayer()
    for _ in replay(records, replayer):
        pass
    assert all(sb.valid for sb in replayer.books.values()), replayer.books
    return {k: (sb.book.top_bids(200), sb.book.top_asks(200)) for k, sb in replayer.books.items()}


class Published:
    """What the ingest flow wrote, decoded by topic."""

    def __init__(self, messages: dict[str, list[tuple[bytes, bytes]]], prefix: str) -> None:
        # every message, as read back from the broker, keeps the contract a downstream consumer relies on
        self.validated = {t[len(prefix):]: validate_values(t[len(prefix):], (v for _, v in msgs))
                          for t, msgs in messages.items()}
        self.book = [decode(v) for _, v in messages[prefix + "book"]]
        self.trades = [decode(v) for _, v in messages[prefix + "trades"]]
        self.klines = [decode(v) for _, v in messages[prefix + "klines"]]
        self.news = [(k, decode(v)) for k, v in messages[prefix + "news"]]
        self.health = [orjson.loads(v) for _, v in messages[prefix + "health"]]
        self.dlq = [orjson.loads(v) for _, v in messages[prefix + "dlq"]]
        self.keys = {k for topic in ("book", "trades") for k, _ in messages[prefix + topic]}

    def snapshots(self) -> list[BookSnapshot]:
        """The venue's snapshots (not the checkpoints of books in sync)."""
        return [r for r in self.book if isinstance(r, BookSnapshot) and not r.checkpoint]

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [h for h in self.health if h["kind"] == kind]


def run_ingest(server: ServerThread, settings: Settings) -> float:
    flow = build_flow(settings, ws_url=server.ws_url, rest_url=server.base_url, channels=CHANNELS, ws_config=FAST)
    t0 = time.monotonic()
    run_main(flow)
    return time.monotonic() - t0


def streamed(capture: list[Any]) -> list[Any]:
    """The capture's records in the order the venue server sends them (its snapshot line is REST only)."""
    return [r for r in capture if not isinstance(r, BookSnapshot)]


def assert_equals_capture(pub: Published, capture: list[Any], lost: frozenset[int] = frozenset()) -> None:
    """Trades equal exactly, deltas and tops equal in content and order (but for the ``lost`` positions of
    :func:`streamed`), and the books rebuilt from ``book`` end as the capture's own."""
    want = [r for i, r in enumerate(streamed(capture)) if i not in lost]
    assert [content(t) for t in pub.trades] == [content(t) for t in want if isinstance(t, Trade)]
    deltas = [content(r) for r in pub.book if isinstance(r, BookDelta)]
    assert deltas == [content(r) for r in want if isinstance(r, BookDelta)]
    tops = [content(r) for r in pub.book if isinstance(r, BookTop)]
    assert tops == [content(r) for r in want if isinstance(r, BookTop)]
    assert pub.keys == {b"binance:ETH-USDT"}
    assert top_of_books(pub.book) == top_of_books(capture)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}."


@pytest.fixture
def kafka_topics(settings: Settings, prefix: str) -> Iterator[list[str]]:
    names = create_topics(settings.kafka.bootstrap_servers, prefix)
    yield names
    AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}).delete_topics(names, operation_timeout=30)


# ---- the flow against the session's Kafka --------------------------------------------------------------------------


def test_replayed_capture_lands_in_kafka_equal_to_its_records(
    settings: Settings, prefix: str, kafka_topics: list[str],
    venue_server_factory: Callable[..., ServerThread],  # noqa: F811
) -> None:
    capture = list(read_file(data_file(CAPTURE)))
    server = venue_server_factory(mode="replay", files=(data_file(CAPTURE),))
    seconds = run_ingest(server, ingest_settings(settings.kafka.bootstrap_servers, prefix))
    pub = Published(consume(settings.kafka.bootstrap_servers, kafka_topics), prefix)
    total = len(pub.book) + len(pub.trades) + len(pub.health)
    print(f"ingest: {total} messages in {seconds:.2f} s = {total / seconds:.0f} msgs/s (venue server in process)")
    assert_equals_capture(pub, capture)
    (snap,) = pub.snapshots()
    assert (snap.venue, snap.symbol) == ("binance", "ETH-USDT") and len(snap.bids) > 500
    # checkpoints every 30 s of venue time, each the book as a replay of what came before it has it
    # (their count depends on when the REST snapshot synced the book: at speed 0 a loaded machine syncs it later)
    checkpoints = [i for i, r in enumerate(pub.book) if isinstance(r, BookSnapshot) and r.checkpoint]
    times = [pub.book[i].ts_event for i in checkpoints]
    assert len(checkpoints) >= 2 and all(b - a >= 30_000_000_000 for a, b in itertools.pairwise(times))
    assert pub.book[-1].ts_event - times[-1] < 35_000_000_000  # none missing at the end either
    for i in checkpoints[:3]:
        cp = pub.book[i]
        assert isinstance(cp, BookSnapshot) and cp.last_update_id == pub.book[i - 1].last_update_id
        (book,) = top_of_books(pub.book[:i]).values()
        assert (list(cp.bids[:200]), list(cp.asks[:200])) == book
    assert pub.dlq == [] and pub.klines == []
    kinds = [h["kind"] for h in pub.health]
    assert kinds[:2] == ["connecting", "connected"]
    assert {"subscribed", "resync", "snapshot", "ended"} <= set(kinds)  # a snapshot may come after the end of data
    (resync,) = pub.kinds("resync")
    assert (resync["reason"], resync["symbol"]) == ("new_session", "ETH-USDT")
    (applied,) = pub.kinds("snapshot")
    assert (applied["event"], applied["valid"], applied["last_update_id"]) == ("SNAPSHOT", True, snap.last_update_id)


def test_dropped_diff_resyncs_and_a_corrupt_frame_goes_to_the_dlq(
    settings: Settings, prefix: str, kafka_topics: list[str],
    venue_server_factory: Callable[..., ServerThread],  # noqa: F811
) -> None:
    capture = list(read_file(data_file(CAPTURE)))
    faults = tuple(parse_faults("drop_diff@15000,corrupt_json@20000"))
    # paced (~5 s): flat out, the feed can end before the first REST snapshot is served, and a snapshot of the
    # final book makes every buffered diff stale: correct, but no gap left to see
    server = venue_server_factory(mode="replay", files=(data_file(CAPTURE),), faults=faults, speed=PACED)
    run_ingest(server, ingest_settings(settings.kafka.bootstrap_servers, prefix))
    injected = {f["kind"]: f for f in server.stats()["faults"]}  # type: ignore[union-attr]
    pub = Published(consume(settings.kafka.bootstrap_servers, kafka_topics), prefix)
    # the connection sent the streamed lines in order, less the dropped diff (sent count "at" for each fault)
    texts = [text for _, text in read_capture([data_file(CAPTURE)]) if text.startswith('{"stream"')]
    records = streamed(capture)
    dropped, corrupt = injected["drop_diff"]["at"], injected["corrupt_json"]["at"] + 1
    assert isinstance(records[dropped], BookDelta) and records[dropped].last_update_id == injected["drop_diff"]["u"]
    (dead,) = pub.dlq
    assert pub.validated["dlq"] == 1 and pub.validated["health"] >= 6 and pub.validated["book"] > 1000
    assert dead["raw"] == texts[corrupt][: len(texts[corrupt]) // 2]
    assert (dead["venue"], dead["error"], dead["conn"]) == ("binance", "ParseError", "binance") and dead["reason"]
    assert_equals_capture(pub, capture, lost=frozenset({dropped, corrupt}))
    gaps = 1 + isinstance(records[corrupt], BookDelta)  # a corrupt diff is one more gap
    snaps = pub.snapshots()
    assert len(snaps) == 1 + gaps  # the session's, and one per resync
    resyncs = pub.kinds("resync")
    assert [h["reason"] for h in resyncs] == ["new_session"] + ["GAP"] * gaps
    drop = injected["drop_diff"]
    assert resyncs[1]["detail"].startswith(f"expected U == {drop['U']}, got U={drop['u'] + 1} ")
    assert [(h["event"], h["valid"]) for h in pub.kinds("snapshot")] == [("SNAPSHOT", True)] * len(snaps)


def test_a_dropped_connection_reconnects_and_resyncs_every_book(
    settings: Settings, prefix: str, kafka_topics: list[str],
    venue_server_factory: Callable[..., ServerThread],  # noqa: F811
) -> None:
    capture = list(read_file(data_file(CAPTURE)))
    # once: the fault counts per connection, and the next connection ends with the capture before it is due again
    faults = tuple(parse_faults("disconnect@20000"))
    server = venue_server_factory(mode="replay", files=(data_file(CAPTURE),), faults=faults, speed=PACED)
    run_ingest(server, ingest_settings(settings.kafka.bootstrap_servers, prefix))
    pub = Published(consume(settings.kafka.bootstrap_servers, kafka_topics), prefix)
    kinds = [h["kind"] for h in pub.health]
    assert kinds.count("connected") >= 2 and "disconnected" in kinds
    sessions = sorted({h["session"] for h in pub.health if h["kind"] == "connected"})
    new_sessions = [h for h in pub.kinds("resync") if h["reason"] == "new_session"]
    assert [h["detail"] for h in new_sessions] == [f"session {n}" for n in sessions]
    assert len(pub.snapshots()) == len(sessions)
    # what was in flight at the disconnect is lost (a live feed cannot rewind), the rest arrives once and in order
    want = [content(t) for t in capture if isinstance(t, Trade)]
    got = [content(t) for t in pub.trades]
    assert len(set(got)) == len(got) and got == [t for t in want if t in set(got)]
    assert top_of_books(pub.book) == top_of_books(capture)


def test_the_module_flow_runs_from_the_environment_until_ccf_stop_after(
    settings: Settings, prefix: str, kafka_topics: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    venue_server_factory: Callable[..., ServerThread],  # noqa: F811
) -> None:
    server = venue_server_factory(mode="synthetic", symbols=("BTC-USDT", "ETH-USDT"), speed=1.0)
    local = links.MARKETS["synthetic"]._replace(ws_url=server.ws_url + "/stream", rest_url=server.base_url)
    monkeypatch.setitem(links.MARKETS, "synthetic", local)  # what CCF_VENUES__WS_URL / __REST_URL would say
    feeds = FeedServer().start()
    feed_url = feeds.add("/coindesk.xml", data_file("rss_feeds/crypto_news/coindesk_rss_2023-03-13.xml"))
    for name, value in {"CCF_STOP_AFTER": "1.5", "CCF_VENUES__SOURCE": "synthetic", "CCF_KAFKA__TOPIC_PREFIX": prefix,
                        "CCF_VENUES__SYMBOLS": '["BTC-USDT","ETH-USDT"]', "CCF_NEWS__ENABLED": "true",
                        "CCF_NEWS__FEEDS": f'["{feed_url}"]', "CCF_NEWS__STATE_PATH": str(tmp_path / "seen.json")}.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        import flows.ingest

        flow = flows.ingest.flow  # built on access, from the environment
        t0 = time.monotonic()
        run_main(flow)
        assert 1.4 < time.monotonic() - t0 < 15
    finally:
        root.handlers[:] = handlers  # the entry point set logging up
        feeds.stop()
    pub = Published(consume(settings.kafka.bootstrap_servers, kafka_topics), prefix)
    assert pub.keys == {b"synthetic:BTC-USDT", b"synthetic:ETH-USDT"}
    assert len(pub.snapshots()) == 2 and len(pub.trades) > 0
    span = max(r.ts_recv for r in pub.book) - min(r.ts_recv for r in pub.book)
    assert span < 1.6e9  # receipt times within CCF_STOP_AFTER (the REST snapshots may come after the first frame)
    assert {(h["symbol"], h["valid"]) for h in pub.kinds("snapshot")} == {("BTC-USDT", True), ("ETH-USDT", True)}
    assert len(pub.news) == 50 and {k for k, _ in pub.news} == {b"news:ALL"}
    assert {n.feed for _, n in pub.news} == {feed_url} and len({n.id for _, n in pub.news}) == 50


# ---- a broker restart mid-run (a broker this test owns) ------------------------------------------------------------


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from ccf.services.manager import ServiceManager

    manager = ServiceManager(tmp_path_factory.mktemp("own-kafka"))
    try:
        manager.up(["kafka"])
        yield manager
    finally:
        manager.down()


def ingest_through_a_restart(manager: Any, server: ServerThread, settings: Settings, outage_s: float,
                             sink: Any = None) -> None:
    """Run the ingest flow while another thread stops the broker once 4000 messages were fed, and starts it again
    ``outage_s`` later (same port, same data); the feed must still be running when it is back."""
    from ccf.services.state import env_vars

    bootstrap = settings.kafka.bootstrap_servers
    fed: dict[str, int] = {}

    def sent() -> int:
        return int(server.stats().get("messages_sent", 0))  # type: ignore[call-overload]

    def restart() -> None:
        deadline = time.monotonic() + 30
        while sent() < 4000 and time.monotonic() < deadline:
            time.sleep(0.05)
        fed["at_stop"] = sent()
        manager.down(["kafka"])
        time.sleep(outage_s)
        manager.up(["kafka"])
        fed["at_start"] = sent()

    thread = threading.Thread(target=restart, name="kafka-restart")
    thread.start()
    try:
        flow = build_flow(settings, sink=sink, ws_url=server.ws_url, rest_url=server.base_url, channels=CHANNELS,
                          ws_config=FAST)
        run_main(flow)
    finally:
        thread.join(60)
    assert 4000 <= fed["at_stop"] < fed["at_start"] < 33617, fed  # the feed ran on while the broker was away
    assert env_vars(manager.status())["CCF_KAFKA__BOOTSTRAP_SERVERS"] == bootstrap  # same port after the restart


def test_a_broker_restart_mid_run_loses_and_duplicates_nothing(
    own_kafka: Any, prefix: str, venue_server_factory: Callable[..., ServerThread]  # noqa: F811
) -> None:
    from ccf.services.state import env_vars

    bootstrap = env_vars(own_kafka.status())["CCF_KAFKA__BOOTSTRAP_SERVERS"]
    topics = create_topics(bootstrap, prefix)
    server = venue_server_factory(mode="replay", files=(data_file(CAPTURE),), speed=25.0)  # ~14 s of feed
    ingest_through_a_restart(own_kafka, server, ingest_settings(bootstrap, prefix), outage_s=1.0)
    pub = Published(consume(bootstrap, topics), prefix)
    assert_equals_capture(pub, list(read_file(data_file(CAPTURE))))  # librdkafka's idempotent retries carried it
    assert len(pub.snapshots()) == 1
    assert pub.dlq == [] and pub.kinds("kafka_retry") == []


def test_deliveries_that_time_out_in_an_outage_are_produced_again(
    own_kafka: Any, prefix: str, venue_server_factory: Callable[..., ServerThread]  # noqa: F811
) -> None:
    """Messages time out after 1 s here, so a 3 s outage fails deliveries for real and the sink produces them again:
    nothing is lost and the order holds; a message whose acknowledgement the outage swallowed may be there twice
    (next to itself): at least once, which the sink's docstring says."""
    from ccf.ingest.producer import KafkaSink
    from ccf.services.state import env_vars

    bootstrap = env_vars(own_kafka.status())["CCF_KAFKA__BOOTSTRAP_SERVERS"]
    topics = create_topics(bootstrap, prefix)
    server = venue_server_factory(mode="replay", files=(data_file(CAPTURE),), speed=25.0)
    settings = ingest_settings(bootstrap, prefix)
    sink = KafkaSink(settings, message_timeout_s=1.0, retries=30, retry_backoff_s=0.2)
    ingest_through_a_restart(own_kafka, server, settings, outage_s=3.0, sink=sink)
    pub = Published(consume(bootstrap, topics), prefix)
    retries = pub.kinds("kafka_retry")
    assert retries and all(h["failed"] > 0 and h["rounds"] >= 1 for h in retries)
    pub.trades = [t for i, t in enumerate(pub.trades) if i == 0 or t != pub.trades[i - 1]]
    pub.book = [r for i, r in enumerate(pub.book) if i == 0 or r != pub.book[i - 1]]
    assert_equals_capture(pub, list(read_file(data_file(CAPTURE))))


# ---- the producer's retries (a fake librdkafka) --------------------------------------------------------------------


class _Err:
    def __init__(self, text: str, fatal: bool = False) -> None:
        self.text, self._fatal = text, fatal

    def fatal(self) -> bool:
        return self._fatal

    def __str__(self) -> str:
        return self.text


class FakeProducer:
    """Fails the deliveries ``fail(value, attempt)`` says; records what was delivered, in order."""

    def __init__(self, fail: Callable[[bytes, int], _Err | None]) -> None:
        self.fail = fail
        self.queue: list[tuple[FakeMessage, Any]] = []
        self.delivered: list[bytes] = []
        self.attempts: Counter[bytes] = Counter()
        self.config: dict[str, Any] = {}

    def __call__(self, config: dict[str, Any]) -> FakeProducer:
        self.config = config
        return self

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.queue.append((FakeMessage(topic, key, value), on_delivery))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        queue, self.queue = self.queue, []
        for msg, report in queue:
            value = msg.value()
            assert value is not None
            self.attempts[value] += 1
            err = self.fail(value, self.attempts[value])
            if err is None:
                self.delivered.append(value)
            report(err, msg)
        return 0


def test_failed_deliveries_are_produced_again_and_raise_after_bounded_retries() -> None:
    messages = [("t.book", b"k", str(i).encode()) for i in range(6)]
    flaky = FakeProducer(lambda v, n: _Err("Local: Message timed out") if v in (b"1", b"4") and n < 3 else None)
    producer = ReliableProducer({}, retries=3, retry_backoff_s=0.0, health_topic="t.health", producer_factory=flaky)
    producer.send(messages)
    assert (flaky.config["enable.idempotence"], flaky.config["acks"]) == (True, "all")
    assert flaky.delivered[:6] == [b"0", b"2", b"3", b"5", b"1", b"4"]  # failures again, in their report order
    (health,) = [orjson.loads(v) for v in flaky.delivered[6:]]
    assert (health["kind"], health["failed"], health["rounds"]) == ("kafka_retry", 4, 2)
    assert producer.sent["t.book"] == 6 and producer.retried == 4

    down = FakeProducer(lambda v, n: _Err("Local: Message timed out"))
    with pytest.raises(SinkError, match="after 2 retries: 6 failed"):
        ReliableProducer({}, retries=2, retry_backoff_s=0.0, producer_factory=down).send(messages)
    assert set(down.attempts.values()) == {3}

    fenced = FakeProducer(lambda v, n: _Err("fatal idempotence error", fatal=True) if v == b"2" else None)
    with pytest.raises(SinkError, match="fatal idempotence error"):
        ReliableProducer({}, retries=5, retry_backoff_s=0.0, producer_factory=fenced).send(messages)
    assert fenced.attempts[b"2"] == 1  # a fatal error is not retried


def test_the_module_builds_nothing_on_import() -> None:
    import flows.ingest as module

    assert "flow" not in vars(module)
    with pytest.raises(AttributeError):
        _ = module.no_such_thing  # type: ignore[attr-defined]
    assert Path(module.__file__ or "").name == "ingest.py"
