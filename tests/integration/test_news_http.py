"""The news poller and its Bytewax source against a local HTTP server (127.0.0.1 only, no outside network).

Every file of the RSS/Atom corpus is served as its own feed; the poller must get through all of them, use conditional
GETs on the second round, not repeat itself after a restart, and back off on a failing feed while the others go on.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from ccf.news import NewsPoller, NewsSource, parse_feed
from ccf.news.source import SINGLE_PART
from ccf.schemas import NewsItem
from tests.datafiles import data_dir
from tests.feed_server import FeedServer

DATA_DIR = data_dir()  # a missing corpus fails loudly: these tests exist to run on the real feeds
RSS = DATA_DIR / "rss_feeds"
S = 1_000_000_000
COINDESK = "crypto_news/coindesk_rss_2023-03-13.xml"
REAL = [COINDESK, "rss-parser_test_input/guardian.rss", "rss-parser_test_input/heise.atom"]
BROKEN = "rss-parser_test_input/unrecognized.rss"


def _key(item: NewsItem) -> tuple[str, str, str, str, int | None, str]:
    """An item without its receipt time (which depends on the clock)."""
    return item.feed, item.id, item.title, item.link, item.published, item.summary


@pytest.fixture(scope="module")
def corpus() -> Iterator[tuple[FeedServer, dict[str, str]]]:
    """The server with every corpus file at ``/<relative path>``; maps each feed URL to its relative path."""
    with FeedServer() as server:
        urls = {}
        for path in sorted(p for p in RSS.rglob("*") if p.is_file()):
            rel = path.relative_to(RSS).as_posix()
            urls[server.add("/" + rel, path)] = rel
        yield server, urls


def _expected(server: FeedServer, url: str, rel: str) -> tuple[list[NewsItem], bool]:
    """What parse_feed makes of the file with the Content-Type the server sends, deduplicated like the poller."""
    ctype = server.resources["/" + rel].content_type
    items, status = parse_feed((RSS / rel).read_bytes(), url, 0, {"content-type": ctype})
    unique = {i.id: i for i in reversed(items)}  # first occurrence wins, as in the poller
    return [i for i in items if unique.get(i.id) is i], status.ok


def test_poll_the_whole_corpus_then_304s_then_restart(
    corpus: tuple[FeedServer, dict[str, str]], tmp_path: Path
) -> None:
    server, urls = corpus
    server.conditional = True
    server.clear_requests()
    state_path = tmp_path / "news-seen.json"
    with NewsPoller(urls, poll_interval_s=60, max_backoff_s=900, state_path=state_path, max_workers=4) as poller:
        items = poller.poll_once(1_000 * S)
        first_requests, first_statuses = list(server.requests), list(server.statuses)
        server.clear_requests()
        second = poller.poll_once(1_060 * S)
        second_requests, second_statuses = list(server.requests), list(server.statuses)
        server.clear_requests()
        state = poller.state()
    by_feed: dict[str, list[NewsItem]] = {}
    for item in items:
        by_feed.setdefault(item.feed, []).append(item)

    # every feed fetched once; each gives exactly what parse_feed gives for its bytes
    assert sorted(p for p, _ in first_requests) == sorted("/" + rel for rel in urls.values())
    assert {status for _, status in first_statuses} == {200}
    ok_feeds = set()
    for url, rel in urls.items():
        expected, ok = _expected(server, url, rel)
        assert [_key(i) for i in by_feed.get(url, [])] == [_key(i) for i in expected], rel
        assert state.feeds[url].failures == (0 if ok else 1), rel
        if ok:
            ok_feeds.add(url)
    assert all(i.fetched >= 1_000 * S for i in items)
    feedparser_feeds = [u for u, r in urls.items() if r.startswith("feedparser_tests/")]
    assert len(feedparser_feeds) == 536
    assert len(by_feed) == 211  # feeds with at least one item
    assert len(items) == 920  # 923 parsed entries less 3 repeated within their own feed
    coindesk = next(u for u, r in urls.items() if r == COINDESK)
    assert len(by_feed[coindesk]) == 50
    assert by_feed[coindesk][0].title.startswith("Bitcoin, U.S. Stock Futures Erase Early Gains")
    assert len(ok_feeds) == len(urls) - 11  # the 11 unusable documents (see the unit test's list)
    assert state_path.exists()
    assert len(json.loads(state_path.read_text())["feeds"]) == len(urls)

    # second round, one interval later: only the good feeds are due; all answer 304 to our validators
    assert second == []
    assert sorted(p for p, _ in second_requests) == sorted("/" + urls[u] for u in ok_feeds)
    assert {status for _, status in second_statuses} == {304}
    for _path, headers in second_requests:
        assert headers["if-none-match"].startswith('"')
        assert headers["if-modified-since"].endswith("GMT")
        assert headers["user-agent"].startswith("ccf-news/")
    # failed feeds wait twice the interval
    assert all(state.feeds[u].next_due_ns == 1_120 * S for u in urls if u not in ok_feeds)

    # restart from the state file against a server that ignores validators: the seen-set alone stops repeats
    server.conditional = False
    try:
        with NewsPoller(urls, poll_interval_s=60, state_path=state_path, max_workers=4) as restarted:
            assert restarted.poll_once(2_000 * S) == []
            assert all(restarted.failures(u) == 0 for u in ok_feeds)
        assert {status for _, status in server.statuses} == {200}
        # the validators came back from the state file too (this server just ignores them)
        assert sum("if-none-match" in h for _, h in server.requests) == len(ok_feeds)
    finally:
        server.conditional = True


def test_failing_feed_backs_off_while_others_go_on(tmp_path: Path) -> None:
    with FeedServer() as server:
        good = server.add_bytes("/good.xml", _rss("g0"))
        bad = server.add("/bad.xml", RSS / COINDESK)
        slow = server.add("/slow.xml", RSS / REAL[1])
        moved = server.add_bytes("/moved.xml", b"")
        server.add("/heise.atom", RSS / REAL[2])
        server.redirect["/moved.xml"] = (301, "/heise.atom")
        server.fail["/bad.xml"] = 500
        server.delay["/slow.xml"] = 30.0  # the server stop wakes it
        poller = NewsPoller(
            [good, bad, slow, moved],
            poll_interval_s=10,
            max_backoff_s=100,
            timeout_s=1.0,
            state_path=tmp_path / "s.json",
        )
        good_ids: list[str] = []
        bad_delays: list[int] = []
        first_round: list[NewsItem] = []
        for round_no in range(16):
            now = round_no * 10 * S
            server.add_bytes("/good.xml", _rss(*[f"g{i}" for i in range(round_no + 1)]))
            before = len(server.requests_for("/bad.xml"))
            items = poller.poll_once(now)
            first_round = first_round or items
            good_ids += [i.id for i in items if i.feed == good]
            if len(server.requests_for("/bad.xml")) > before:
                bad_delays.append((poller.state().feeds[bad].next_due_ns - now) // S)
        # the good feed was polled every round and gave one new id each time
        assert good_ids == [f"g{i}" for i in range(16)]
        # the failing one: polled at 0, 20, 60, 140 s; waits 20, 40, 80, then the 100 s cap
        assert bad_delays == [20, 40, 80, 100]
        state = poller.state().feeds
        assert state[bad].last_error == "HTTP 500"
        assert state[bad].failures == 4
        assert state[slow].last_error.startswith("ReadTimeout")
        assert len(server.requests_for("/slow.xml")) == state[slow].failures == 4
        # the redirect was followed; its items keep the configured feed URL
        assert state[moved].failures == 0
        assert len([i for i in first_round if i.feed == moved]) == 15
        # recovery resets the backoff
        del server.fail["/bad.xml"]
        items = poller.poll_once(state[bad].next_due_ns)
        assert len([i for i in items if i.feed == bad]) == 50
        assert poller.failures(bad) == 0
        assert poller.state().feeds[bad].next_due_ns == state[bad].next_due_ns + 10 * S
        poller.close()


def test_backoff_sequence_against_http_500() -> None:
    with FeedServer() as server:
        url = server.add_bytes("/x.xml", b"")
        server.fail["/x.xml"] = 500
        poller = NewsPoller([url], poll_interval_s=1, max_backoff_s=30, timeout_s=2)
        now, delays = 0, []
        for _ in range(7):
            poller.poll_once(now)
            delays.append((poller.next_due_ns() - now) / S)
            now = poller.next_due_ns()
        assert delays == [2, 4, 8, 16, 30, 30, 30]
        assert len(server.requests_for("/x.xml")) == 7
        poller.close()


def _rss(*ids: str) -> bytes:
    items = "".join(f"<item><title>t {i}</title><guid isPermaLink='false'>{i}</guid></item>" for i in ids)
    return f"<rss version='2.0'><channel><title>x</title>{items}</channel></rss>".encode()


# -- Bytewax ---------------------------------------------------------------------------------------------------------


def _run(source: NewsSource) -> list[NewsItem]:
    flow = Dataflow("news_test")
    stream = op.input("news", flow, source)
    out: list[NewsItem] = []
    op.output("out", stream, TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]  # bytewax.testing has no annotations here
    return out


@pytest.mark.parametrize("per_feed", [False, True])
def test_bytewax_source_ends_and_yields_the_items(per_feed: bool, tmp_path: Path) -> None:
    with FeedServer() as server:
        urls = [server.add("/" + rel, RSS / rel) for rel in [*REAL, BROKEN]]
        expected = [i for url, rel in zip(urls, [*REAL, BROKEN], strict=True) for i in _expected(server, url, rel)[0]]
        assert len(expected) == 50 + 55 + 15
        state_path = tmp_path / "news.json"
        started = time.time_ns()
        source = NewsSource(urls, state_path=state_path, per_feed=per_feed, max_polls=1, poll_interval_s=60)
        out = _run(source)
        assert sorted(_key(i) for i in out) == sorted(_key(i) for i in expected)
        assert all(started <= i.fetched <= time.time_ns() for i in out)
        if not per_feed:
            assert [_key(i) for i in out] == [_key(i) for i in expected]  # one partition keeps feed and entry order
        # a second run with the same state file ends too, with nothing new
        assert _run(NewsSource(urls, state_path=state_path, per_feed=per_feed, max_polls=1)) == []
        assert len(server.requests_for("/" + COINDESK)) == 2


def test_partition_snapshot_resumes_without_repeats(tmp_path: Path) -> None:
    with FeedServer() as server:
        url = server.add_bytes("/f.xml", _rss("a", "b"))
        source = NewsSource([url], max_polls=2, poll_interval_s=0.05)
        part = source.build_part("news", SINGLE_PART, None)
        got: list[NewsItem] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got += part.next_batch()
            time.sleep(0.01)
        assert [i.id for i in got] == ["a", "b"]
        snapshot = pickle.loads(pickle.dumps(part.snapshot()))
        part.close()
        server.add_bytes("/f.xml", _rss("c", "b", "a"))
        resumed = source.build_part("news", SINGLE_PART, snapshot)
        more: list[NewsItem] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                more += resumed.next_batch()
            except StopIteration:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the source did not end after max_polls")
        assert [i.id for i in more] == ["c"]


# -- the features flow's own news source (CCF_NEWS__ENABLED without Kafka) into the embedded store ----------------------


def test_features_flow_polls_the_feeds_into_the_news_table_once(tmp_path: Path) -> None:
    from ccf.settings import Settings
    from ccf.store.duckdb_store import DuckDBStore
    from ccf.store.sinks import all_tables
    from flows.features import build_flow

    with FeedServer() as server:
        urls = [server.add("/" + rel, RSS / rel) for rel in [*REAL, BROKEN]]
        expected = {i.id for url, rel in zip(urls, [*REAL, BROKEN], strict=True) for i in _expected(server, url, rel)[0]}
        store = tmp_path / "store.duckdb"

        def run(state: str) -> list[tuple[str, float, str]]:
            # stop_after: the news source polls once (it checks only before a poll), the synthetic venue 0.5 s
            s = Settings(stop_after=0.5, store={"path": store}, venues={"speed": 0},  # type: ignore[arg-type]
                         news={"enabled": True, "feeds": urls, "state_path": tmp_path / state})
            run_main(build_flow(s))  # type: ignore[no-untyped-call]  # as in _run
            db = DuckDBStore(store, all_tables(s))
            try:
                return db.query("SELECT id, sentiment, bases FROM news")  # type: ignore[return-value]
            finally:
                db.close()

        rows = run("seen-1.json")
        assert sorted(r[0] for r in rows) == sorted(expected) and len(rows) == 120
        assert all(-1.0 <= r[1] <= 1.0 for r in rows) and sum(r[1] != 0.0 for r in rows) > 40
        assert {"BTC", "ETH"} <= {b for r in rows for b in r[2].split(",") if b}
        # a second run whose poller forgot what it saw fetches every item again: no row more, none changed
        assert sorted(run("seen-2.json")) == sorted(rows)
        assert len(server.requests_for("/" + COINDESK)) == 2
