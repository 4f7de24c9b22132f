"""ccf.news: parsing the whole RSS/Atom corpus, contents of real feeds, ids, state file, backoff, and the poller over
an in-memory HTTP transport (httpx.MockTransport: no sockets)."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccf.news import (
    FeedState,
    FeedStatus,
    NewsPoller,
    NewsSource,
    PollerState,
    backoff_s,
    clean_text,
    entry_id,
    load_state,
    parse_feed,
    save_state,
)
from ccf.news.parse import MAX_SUMMARY_CHARS
from ccf.news.state import SeenSet, state_path_for
from ccf.schemas import NewsItem, decode, encode
from ccf.settings import NewsSettings
from tests.datafiles import data_dir

DATA_DIR = data_dir()  # a missing corpus fails loudly: these tests exist to run on the real feeds
RSS = DATA_DIR / "rss_feeds"
ALL_FILES = sorted(p for p in RSS.rglob("*") if p.is_file())
S = 1_000_000_000


def ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) * S


def _parse(rel: str, feed: str = "https://feeds.test/x", fetched: int = 7) -> tuple[list[NewsItem], FeedStatus]:
    return parse_feed((RSS / rel).read_bytes(), feed, fetched)


# -- the corpus ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_FILES, ids=[str(p.relative_to(RSS)) for p in ALL_FILES])
def test_every_corpus_file_parses_without_exception(path: Path) -> None:
    items, status = parse_feed(path.read_bytes(), "https://feeds.test/" + path.name, 5)
    assert all(i.feed == "https://feeds.test/" + path.name and i.fetched == 5 for i in items)
    assert all(i.title or i.link or i.summary for i in items)
    assert all(len(i.summary) <= MAX_SUMMARY_CHARS for i in items)
    if not status.ok:
        assert status.reason
        assert not items


def test_corpus_totals() -> None:
    counts = {
        d: sum(1 for p in ALL_FILES if p.relative_to(RSS).parts[0] == d)
        for d in {p.relative_to(RSS).parts[0] for p in ALL_FILES}
    }
    assert counts == {"feedparser_tests": 536, "feed-rs_fixtures": 68, "rss-parser_test_input": 30, "crypto_news": 1}
    results = [parse_feed(p.read_bytes(), "u", 1) for p in ALL_FILES]
    assert sum(len(items) for items, _ in results) == 923
    assert sum(s.bozo for _, s in results) == 32
    failed = sorted(str(p.relative_to(RSS)) for p, (_, s) in zip(ALL_FILES, results, strict=True) if not s.ok)
    assert failed == [
        "feed-rs_fixtures/jsonfeed/jsonfeed_elastic_1.1.json",  # JSON Feed: not a format feedparser reads
        "feed-rs_fixtures/jsonfeed/jsonfeed_example_1.json",
        "feed-rs_fixtures/jsonfeed/jsonfeed_spec_1.json",
        "feed-rs_fixtures/rss2/rss_2.0_invalid_1.xml",  # truncated
        "feed-rs_fixtures/xml/xml_sample_1.xml",  # XML, but not a feed
        "feed-rs_fixtures/xml/xml_sample_2.xml",
        "feedparser_tests/encoding/bozo_invalid-bytes-with-bom.xml",
        "feedparser_tests/illformed/aaa_illformed.xml",
        "feedparser_tests/illformed/rss_empty_document.xml",
        "feedparser_tests/illformed/undeclared_namespace.xml",
        "rss-parser_test_input/unrecognized.rss",
    ]


# -- contents of real feeds ------------------------------------------------------------------------------------------


def test_coindesk_capture() -> None:
    items, status = _parse("crypto_news/coindesk_rss_2023-03-13.xml", "https://www.coindesk.com/arc/outboundfeeds/rss/")
    assert len(items) == 50
    assert status.ok
    assert not status.bozo
    assert status.version == "rss20"
    first = items[0]
    assert first.id == "GAHBBCJVKFCXDLONTKPLD5TODI"  # guid isPermaLink="false"
    assert first.title == (
        "Bitcoin, U.S. Stock Futures Erase Early Gains as First Republic Bank Tanks 50% in Pre-Market Trading"
    )
    assert first.link == (
        "https://www.coindesk.com/markets/2023/03/13/bitcoin-us-stock-futures-erase-early-gains-as-first-republic-"
        "bank-tanks-50-in-pre-market-trading/?utm_medium=referral&utm_source=rss&utm_campaign=headlines"
    )
    # <pubDate>Mon, 13 Mar 2023 10:13:50 +0000</pubDate>
    assert first.published == 1_678_702_430_000_000_000 == ns(2023, 3, 13, 10, 13, 50)
    assert first.fetched == 7
    assert first.summary.startswith("Risk assets pared gains while bond yields tanked")
    last = items[-1]
    assert last.id == "252GL3SI7NHPDE2FRR3FG6R2KU"
    assert last.title == "Cathie Wood's Ark Invest Buys $22M in Coinbase Shares"
    assert last.published == ns(2023, 3, 10, 13, 8, 1)
    assert len({i.id for i in items}) == 50
    assert all(i.published is not None and ns(2023, 3, 10) <= i.published < ns(2023, 3, 14) for i in items)


def test_guardian_rss() -> None:
    items, status = _parse("rss-parser_test_input/guardian.rss")
    assert len(items) == 55
    assert status.ok
    first = items[0]
    url = "https://www.theguardian.com/us-news/2018/jan/31/donald-trump-state-of-the-union-address-unity-discord"
    assert first.title == "Trump State of the Union address promised unity but emphasized discord"
    assert first.link == url
    assert first.id == url
    assert first.published == ns(2018, 1, 31, 7, 26, 5)  # Wed, 31 Jan 2018 07:26:05 GMT
    # the description is escaped HTML: tags gone, paragraphs separated, entities decoded
    assert first.summary.startswith("The president’s ‘new American moment’ speech stirred Republican applause")
    assert "contempt Donald Trump has promised" in first.summary
    assert "<" not in first.summary


def test_heise_atom() -> None:
    items, status = _parse("rss-parser_test_input/heise.atom")
    assert len(items) == 15
    assert status.version == "atom10"
    first = items[0]
    assert first.id == "http://heise.de/-3088438"
    assert first.title == "Java-Anwendungsserver: Red Hat gibt WildFly 10 frei"
    assert first.link == (
        "http://www.heise.de/developer/meldung/Java-Anwendungsserver-Red-Hat-gibt-WildFly-10-frei-3088438.html"
        "?wt_mc=rss.developer.beitrag.atom"
    )
    assert first.published == ns(2016, 2, 1, 16, 22)  # <published>2016-02-01T17:22:00+01:00</published>
    assert items[-1].title == "Apache Software Foundation bekommt ein neues Logo"


def test_ill_formed_feed_keeps_recovered_entries() -> None:
    items, status = _parse("feed-rs_fixtures/rss2/rss_2.0_dbengines.xml")  # undefined HTML entity
    assert status.ok
    assert status.bozo
    assert "undefined entity" in status.reason
    assert items[0].title == "Snowflake is the DBMS of the Year 2022, defending the title from last year"


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("rss-parser_test_input/unrecognized.rss", "junk after document element"),
        ("feedparser_tests/illformed/rss_empty_document.xml", "no element found"),
    ],
)
def test_broken_feeds_say_why(rel: str, why: str) -> None:
    items, status = _parse(rel)
    assert items == []
    assert not status.ok
    assert status.bozo
    assert why in status.reason
    assert "no entries recovered" in status.reason


def test_empty_and_hostile_bytes() -> None:
    assert parse_feed(b"", "u", 1)[1].reason == "empty document"
    items, status = parse_feed(str(Path(__file__)).encode(), "u", 1)  # a file name is content, never opened
    assert items == []
    assert not status.ok
    items, status = parse_feed(b"http://127.0.0.1:9/never-fetched", "u", 1)
    assert items == []
    assert not status.ok


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.lists(
            st.sampled_from(
                [
                    b"<?xml version='1.0' encoding='utf-16'?>",
                    b"<rss>",
                    b"<channel>",
                    b"<item>",
                    b"<title>",
                    b"</title>",
                    b"<![CDATA[",
                    b"]]>",
                    b"&amp;",
                    b"&bogus;",
                    b"\xff\xfe",
                    b"<feed xmlns='http://www.w3.org/2005/Atom'>",
                    b"<entry>",
                    b"<pubDate>Mon, 99 Foo 2023</pubDate>",
                    b"<guid>",
                    b"</item>",
                    b"\x00",
                    b"<link>x</link>",
                ]
            ),
            max_size=30,
        ).map(b"".join),
    )
)
def test_parse_feed_never_raises(content: bytes) -> None:
    items, status = parse_feed(content, "https://feeds.test/fuzz", 1)
    assert status.ok or not items


# -- ids, times, text ------------------------------------------------------------------------------------------------

_NO_GUID = b"""<rss version="2.0"><channel><title>t</title>
<item><title>Linked</title><link>https://x.test/a</link></item>
<item><title>Bare &amp; <b>bold</b></title><pubDate>Tue, 14 Mar 2023 08:00:00 GMT</pubDate></item>
<item><title>Undated</title><pubDate>the day after tomorrow</pubDate></item>
</channel></rss>"""


def test_ids_fall_back_and_are_stable_across_parses() -> None:
    a, _ = parse_feed(_NO_GUID, "https://x.test/feed", 1)
    b, _ = parse_feed(_NO_GUID, "https://x.test/feed", 999)
    assert [i.id for i in a] == [i.id for i in b]
    assert a[0].id == "https://x.test/a"
    assert a[1].id.startswith("sha256:")
    assert a[1].id != a[2].id
    assert a[1].published == ns(2023, 3, 14, 8)
    assert a[2].published is None
    assert a[1].title == "Bare & bold"


def test_corpus_ids_stable_across_two_parses() -> None:
    for rel in (
        "crypto_news/coindesk_rss_2023-03-13.xml",
        "rss-parser_test_input/guardian.rss",
        "rss-parser_test_input/reddit.rss",
    ):
        first, _ = _parse(rel, fetched=1)
        second, _ = _parse(rel, fetched=2)
        assert [i.id for i in first] == [i.id for i in second]
        assert first


def test_entry_id_and_clean_text() -> None:
    assert entry_id("  g ", "l", "t", "p") == "g"
    assert entry_id(None, "", "t", "p") == entry_id("", "", "t", "p") != entry_id(None, "", "t", "q")
    assert clean_text("<div>a<script>alert(1)</script>\tb</div>") == "a b"
    assert clean_text("x" * 5000, limit=MAX_SUMMARY_CHARS) == "x" * 999 + "…"
    assert clean_text(None) == ""
    assert clean_text(3) == ""


def test_news_item_round_trips_through_the_schema() -> None:
    items, _ = parse_feed(_NO_GUID, "https://x.test/feed", 1)
    assert [decode(encode(i)) for i in items] == items


# -- state and backoff -----------------------------------------------------------------------------------------------


def test_backoff_arithmetic() -> None:
    assert [backoff_s(n, 60.0, 900.0) for n in range(7)] == [60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0]
    assert backoff_s(10_000, 60.0, 900.0) == 900.0  # no overflow
    assert backoff_s(1, 60.0, 30.0) == 60.0  # a cap below the interval never polls faster than the interval


def test_seen_set_is_bounded_and_recency_ordered() -> None:
    s = SeenSet(limit=3)
    assert [s.add(x) for x in "abcad"] == [True, True, True, False, True]
    assert list(s) == ["c", "a", "d"]
    assert "b" not in s


def test_state_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "news-seen.json"
    state = PollerState(
        {
            "https://a.test/rss": FeedState(
                '"e1"', "Mon, 13 Mar 2023 10:39:40 GMT", ("1", "2", "3"), 2, 99, "HTTP 500"
            ),
            "https://b.test/rss": FeedState(seen=("x",)),
        }
    )
    save_state(path, state)
    assert [p.name for p in path.parent.iterdir()] == ["news-seen.json"]  # the tmp file was renamed away
    loaded = load_state(path)
    # validators and seen ids survive a restart; backoff does not
    assert loaded.feeds["https://a.test/rss"] == FeedState('"e1"', "Mon, 13 Mar 2023 10:39:40 GMT", ("1", "2", "3"))
    assert loaded.feeds["https://b.test/rss"] == FeedState(seen=("x",))
    assert load_state(path, limit=2).feeds["https://a.test/rss"].seen == ("2", "3")
    raw = json.loads(path.read_text())
    assert raw["version"] == 1
    assert set(raw["feeds"]) == {"https://a.test/rss", "https://b.test/rss"}
    assert pickle.loads(pickle.dumps(state)) == state


def test_unreadable_state_file_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert load_state(tmp_path / "missing.json") == PollerState()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="ccf.news.state"):
        assert load_state(bad) == PollerState()
    assert str(bad) in caplog.text
    bad.write_text('{"version": 99, "feeds": {}}')
    assert load_state(bad) == PollerState()


def test_state_path_for_gives_each_feed_its_own_file() -> None:
    base = Path("/tmp/news.json")
    a, b = state_path_for(base, "https://a.test/"), state_path_for(base, "https://b.test/")
    assert a != b
    assert a.parent == base.parent
    assert a.suffix == ".json"


# -- the poller over an in-memory transport --------------------------------------------------------------------------

FEED = b"""<rss version="2.0"><channel><title>t</title>%s</channel></rss>"""


def _rss(*ids: str) -> bytes:
    return FEED % b"".join(
        b"<item><title>n%s</title><guid isPermaLink='false'>%s</guid></item>" % (i.encode(), i.encode()) for i in ids
    )


class FakeWeb:
    """Feeds by URL with ETags; ``status`` forces a status; ``error`` raises a transport exception."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.error: dict[str, Exception] = {}
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        url = str(request.url)
        if url in self.error:
            raise self.error[url]
        if url in self.status:
            return httpx.Response(self.status[url], headers=self.headers.get(url, {}))
        body = self.bodies[url]
        etag = f'"{hash(body) & 0xFFFFFF:x}"'
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        return httpx.Response(200, content=body, headers={"ETag": etag, "Content-Type": "application/rss+xml"})

    def requests_to(self, url: str) -> list[httpx.Request]:
        return [r for r in self.seen if str(r.url) == url]


A, B = "https://a.test/rss", "https://b.test/rss"


def _poller(web: FakeWeb, feeds: list[str], clock: Callable[[], int] = lambda: 0, **kw: object) -> NewsPoller:
    client = httpx.Client(transport=httpx.MockTransport(web))
    return NewsPoller(feeds, poll_interval_s=60, max_backoff_s=900, client=client, clock=clock, **kw)  # type: ignore[arg-type]  # test kwargs


def test_poller_conditional_get_dedup_and_schedule() -> None:
    web = FakeWeb()
    web.bodies[A] = _rss("1", "2")
    poller = _poller(web, [A])
    assert poller.next_due_ns() == 0
    items = poller.poll_once(100 * S)
    assert [i.id for i in items] == ["1", "2"]
    assert all(i.fetched == 100 * S for i in items)
    assert poller.next_due_ns() == 160 * S
    assert poller.poll_once(159 * S) == []
    assert len(web.seen) == 1
    assert poller.poll_once(160 * S) == []  # 304
    assert web.seen[-1].headers["if-none-match"]
    assert web.seen[-1].headers["user-agent"].startswith("ccf-news/")
    web.bodies[A] = _rss("3", "1", "2")
    assert [i.id for i in poller.poll_once(220 * S)] == ["3"]


def test_fetched_is_receipt_time_never_before_the_poll() -> None:
    web = FakeWeb()
    web.bodies[A] = _rss("1")
    assert _poller(web, [A], clock=lambda: 150 * S).poll_once(100 * S)[0].fetched == 150 * S
    assert _poller(web, [A], clock=lambda: 50 * S).poll_once(100 * S)[0].fetched == 100 * S


def test_failing_feed_backs_off_exponentially_and_alone(caplog: pytest.LogCaptureFixture) -> None:
    web = FakeWeb()
    web.bodies[A] = _rss("a1")
    web.bodies[B] = _rss("b1")
    web.status[B] = 500
    poller = _poller(web, [A, B])
    now = 0
    delays = []
    with caplog.at_level(logging.WARNING, logger="ccf.news.poller"):
        for _ in range(6):
            poller.poll_once(now)
            due_b = poller.state().feeds[B].next_due_ns
            delays.append((due_b - now) // S)
            now = due_b
    assert delays == [120, 240, 480, 900, 900, 900]
    assert poller.failures(B) == 6
    assert poller.state().feeds[B].last_error == "HTTP 500"
    assert B in caplog.text
    assert "HTTP 500" in caplog.text
    assert len(web.requests_to(A)) > 1  # A kept being polled at its own interval
    del web.status[B]
    assert [i.id for i in poller.poll_once(now)] == ["b1"]
    assert poller.failures(B) == 0
    assert poller.state().feeds[B].next_due_ns == now + 60 * S


@pytest.mark.parametrize(
    "fault",
    [
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        httpx.TooManyRedirects("loop"),
    ],
)
def test_transport_faults_are_feed_failures(fault: Exception) -> None:
    web = FakeWeb()
    web.error[A] = fault
    poller = _poller(web, [A])
    assert poller.poll_once(0) == []
    assert poller.failures(A) == 1
    assert type(fault).__name__ in poller.state().feeds[A].last_error


def test_retry_after_and_oversized_and_unusable_bodies() -> None:
    web = FakeWeb()
    web.status[A] = 429
    web.headers[A] = {"Retry-After": "600"}
    poller = _poller(web, [A])
    poller.poll_once(0)
    assert poller.next_due_ns() == 600 * S
    web = FakeWeb()
    web.bodies[A] = _rss(*[str(i) for i in range(200)])
    poller = _poller(web, [A], max_bytes=1000)
    assert poller.poll_once(0) == []
    assert "larger than" in poller.state().feeds[A].last_error
    web = FakeWeb()
    web.bodies[A] = b"<html><body>Object Moved</body></html>"
    poller = _poller(web, [A])
    assert poller.poll_once(0) == []
    assert poller.failures(A) == 1
    assert poller.state().feeds[A].etag is None  # validators of an unusable body are not kept


def test_restart_with_state_file_and_resume_from_snapshot(tmp_path: Path) -> None:
    web = FakeWeb()
    web.bodies[A] = _rss("1", "2")
    path = tmp_path / "seen.json"
    first = _poller(web, [A], state_path=path)
    assert len(first.poll_once(0)) == 2
    snapshot = pickle.loads(pickle.dumps(first.state()))
    web.bodies[A] = _rss("3", "2", "1")
    web2 = FakeWeb()
    web2.bodies[A] = web.bodies[A]  # new content, so a 200 with old entries in it: the seen-set must drop them
    restarted = _poller(web2, [A], state_path=path)
    assert restarted.next_due_ns() == 0  # a restart polls at once; backoff and schedule are not in the file
    assert [i.id for i in restarted.poll_once(0)] == ["3"]
    resumed = _poller(web2, [A], resume=snapshot, state_path=tmp_path / "other.json")
    assert resumed.next_due_ns() == 60 * S  # a snapshot keeps the schedule
    assert [i.id for i in resumed.poll_once(60 * S)] == ["3"]


def test_seen_set_bound_applies_per_feed() -> None:
    web = FakeWeb()
    web.bodies[A] = _rss(*[str(i) for i in range(10)])
    poller = _poller(web, [A], max_seen=4)
    assert len(poller.poll_once(0)) == 10
    assert poller.state().feeds[A].seen == ("6", "7", "8", "9")


def test_from_settings(tmp_path: Path) -> None:
    news = NewsSettings(feeds=[A, B], poll_interval_s=30, max_backoff_s=300, state_path=tmp_path / "n.json")
    poller = NewsPoller.from_settings(news, max_workers=2)
    assert poller.feeds == [A, B]
    assert (poller.poll_interval_s, poller.max_backoff_s, poller.state_path) == (30, 300, tmp_path / "n.json")
    assert NewsPoller.from_settings(news, feeds=[B]).feeds == [B]
    source = NewsSource.from_settings(news, per_feed=True, max_polls=1)
    assert source.list_parts() == [A, B]
    assert source.poller_kwargs == {"poll_interval_s": 30, "max_backoff_s": 300}
    assert NewsSource.from_settings(NewsSettings()).list_parts() == ["news"]
    assert not (tmp_path / "n.json").exists()  # nothing is written before a poll
