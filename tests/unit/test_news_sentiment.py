"""News sentiment (VADER, packaged lexicon) and the news table: each item once, in the features flow and its sink.

The flow tests run the features flow in process on synthetic BTC/ETH records with real headlines (the shared
CoinDesk feed) fetched inside their span, into the embedded DuckDB store, twice (a replay adds no row).
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from ccf.engine import EngineConfig, EngineOut, SymbolEngine
from ccf.features.bookkeeper import SyncedBook
from ccf.features.news import mentioned_bases, route_news, scored
from ccf.news.parse import parse_feed
from ccf.news.sentiment import item_sentiment, sentiment
from ccf.schemas import BookTop, NewsItem
from ccf.settings import Settings
from ccf.sources import NEWS_KEY, chunk_by_key
from ccf.store.duckdb_store import DuckDBStore
from ccf.store.sinks import _OutputPartition, all_tables
from ccf.synthetic import SyntheticVenue
from flows.features import _EngineLogic, build_flow
from tests.datafiles import data_dir

RSS = data_dir() / "rss_feeds"
COINDESK = RSS / "crypto_news" / "coindesk_rss_2023-03-13.xml"
ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000_000


def _item(i: str, title: str, fetched: int = 1, summary: str = "", feed: str = "f") -> NewsItem:
    return NewsItem(id=i, feed=feed, title=title, link=f"https://example.org/{i}", published=None, fetched=fetched,
                    summary=summary)


# -- sentiment ---------------------------------------------------------------------------------------------------


def test_positive_and_negative_headlines_and_empty_text() -> None:
    good = sentiment("Bitcoin surges to a record high as investors celebrate strong gains")
    bad = sentiment("Crypto lender collapses, customers lose savings in fraud scandal")
    assert 0.3 < good <= 1.0 and -1.0 <= bad < -0.3
    assert sentiment("") == sentiment("  ", "") == sentiment("<p></p>") == 0.0
    assert sentiment("Bitcoin price update") == 0.0  # no lexicon word: neutral
    # HTML in a summary is text to VADER only after its tags go; entities are decoded
    assert sentiment("ETH", "<p>Ether <b>rallies</b> &amp; wins</p>") == sentiment("ETH", "Ether rallies & wins")
    item = _item("1", "Bitcoin surges to a record high as investors celebrate strong gains", summary="Great news")
    assert item_sentiment(item) == sentiment(item.title, "Great news") != good


def test_every_item_of_the_shared_feeds_scores_in_range_the_same_every_time() -> None:
    items = [i for p in sorted(RSS.rglob("*")) if p.is_file() for i in parse_feed(p.read_bytes(), p.name, 0)[0]]
    assert len(items) > 300
    scores = [item_sentiment(i) for i in items]
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert [item_sentiment(i) for i in items[:50]] == scores[:50]
    assert sum(s > 0.05 for s in scores) > 30 and sum(s < -0.05 for s in scores) > 10


def test_importing_the_module_loads_no_lexicon() -> None:
    code = ("import sys, ccf.news.sentiment as s, flows.features; "
            "assert 'vaderSentiment.vaderSentiment' not in sys.modules; assert s._analyser.cache_info().currsize == 0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCF_")}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)


def test_routing_scores_each_item_once_and_keeps_given_scores() -> None:
    both = _item("1", "Bitcoin and Ether rally")
    pairs = scored([both, (_item("2", "Solana news"), 0.5)])
    assert pairs[0] == (both, item_sentiment(both)) and pairs[1][1] == 0.5
    routed = dict(route_news(pairs, [("v", "BTC-USDT"), ("v", "ETH-USDT")]))
    assert routed == {"v:BTC-USDT": [pairs[0]], "v:ETH-USDT": [pairs[0]]}


# -- the news table ------------------------------------------------------------------------------------------------


def _partition(path: Path) -> _OutputPartition:
    s = Settings(store={"path": path})  # type: ignore[arg-type]  # pydantic validates the dict
    return _OutputPartition(DuckDBStore(path, all_tables(s)), None, s.forecast.quantiles, f"embedded store {path}")


def _news(path: Path) -> list[tuple[Any, ...]]:
    store = DuckDBStore(path, all_tables(Settings(store={"path": path})))  # type: ignore[arg-type]  # as above
    try:
        return store.query("SELECT fetched, id, feed, title, link, published, sentiment, bases FROM news ORDER BY id")
    finally:
        store.close()


def test_the_same_item_twice_is_one_row_and_a_restart_writes_no_id_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.duckdb"
    a = msgspec.structs.replace(_item("a", "Bitcoin and Ether rally"), published=5 * S)
    part = _partition(path)
    part.write_batch([EngineOut(news=[(a, 0.5), (a, 0.5)]), EngineOut(news=[(a, 0.5)])])
    part.close()
    assert _news(path) == [(1, "a", "f", "Bitcoin and Ether rally", "https://example.org/a", 5 * S, 0.5, "BTC,ETH")]
    assert "1 news items" in capsys.readouterr().out
    # restarted: the same item replayed, fetched again later (a poller that lost its state), from a second feed
    part = _partition(path)
    again = [(a, 0.5), (msgspec.structs.replace(a, fetched=9), 0.5), (msgspec.structs.replace(a, feed="g"), 0.5)]
    part.write_batch([EngineOut(news=[*again, (_item("b", "No coin here", fetched=2), 0.0)])])
    part.close()
    assert [(r[1], r[0]) for r in _news(path)] == [("a", 1), ("b", 2)]
    assert "1 news items" in capsys.readouterr().out.replace("not rewritten: 3 news", "")


# -- the features flow, in process, into the embedded store ----------------------------------------------------------


def _market(seconds: int) -> list[Any]:
    venue = SyntheticVenue(["BTC-USDT", "ETH-USDT"], seed=3)
    out: list[Any] = []
    while not out or out[-1].ts_event < out[0].ts_event + seconds * S:
        out += [r for r in venue.next_batch(2000) if not isinstance(r, BookTop)]
    return [r for r in out if r.ts_event < out[0].ts_event + seconds * S]


def _headlines(t0: int) -> list[NewsItem]:
    items, status = parse_feed(COINDESK.read_bytes(), "https://www.coindesk.com/arc/outboundfeeds/rss/", 0)
    assert status.ok and len(items) == 50
    return [msgspec.structs.replace(n, fetched=t0 + 5 * S + i * S // 2) for i, n in enumerate(items)]


def test_flow_writes_each_news_item_once_and_its_windows_mean_sentiment(tmp_path: Path) -> None:
    market = _market(40)
    news = _headlines(market[0].ts_event)
    merged = sorted([*market, *news], key=lambda r: r.fetched if isinstance(r, NewsItem) else r.ts_event)
    # chunks as a source makes them (a batch's news after its market records: batches shorter than the lateness)
    chunks = [c for i in range(0, len(merged), 20) for c in chunk_by_key(merged[i : i + 20])]
    s = Settings(store={"path": tmp_path / "store.duckdb"},  # type: ignore[arg-type]  # pydantic validates dicts
                 venues={"symbols": ["BTC-USDT", "ETH-USDT"]}, forecast={"models": ["naive"]})
    outs: list[tuple[str, EngineOut]] = []
    run_main(build_flow(s, source=TestingSource(chunks), sink=TestingSink(outs)))
    written = [n for k, o in outs for n, _ in o.news]
    assert [n.id for n in written] == [n.id for n in news] and all(k == NEWS_KEY for k, o in outs if o.news)
    # per symbol, the windows count the items naming its base and average their sentiment
    for sym, base in (("BTC-USDT", "BTC"), ("ETH-USDT", "ETH")):
        rows = [r for k, o in outs if k == f"synthetic:{sym}" for r in o.rows]
        mine = [n for n in news if base in mentioned_bases(n)]
        assert len(mine) >= 3 and sum(r.features["news_count"] for r in rows) == len(mine)
        for r in rows:
            want = [item_sentiment(n) for n in mine if r.window_start <= n.fetched < r.window_end]
            got = r.features["news_sentiment"]
            assert (math.isnan(got) and not want) or math.isclose(got, sum(want) / len(want)), (r.window_start, got)
    # the real sink: one row per item; the same input again (a replay) adds none
    for _ in range(2):
        run_main(build_flow(s, source=TestingSource(chunks)))
        rows = _news(s.store.path)
        assert len(rows) == len({r[1] for r in rows}) == 50
    assert {r[1]: r[6] for r in rows} == {n.id: item_sentiment(n) for n in news}
    assert {r[1]: r[7] for r in rows} == {n.id: ",".join(sorted(mentioned_bases(n))) for n in news}


def test_news_before_a_symbols_first_market_record_wait_for_it_across_a_snapshot() -> None:
    market = [r for r in _market(5) if r.symbol == "BTC-USDT"]
    item = msgspec.structs.replace(_item("n", "Bitcoin rallies"), fetched=market[0].ts_event + 2 * S)

    def make(first: Any) -> SymbolEngine:
        return SymbolEngine(first.venue, first.symbol, SyncedBook(first.venue, first.symbol), EngineConfig())

    logic = _EngineLogic(make, None)
    assert logic.on_batch([[(item, 0.5)]])[0] == [] and logic.engine is None
    resumed = _EngineLogic(make, pickle.loads(pickle.dumps(logic.snapshot())))  # a restart from a snapshot
    outs = resumed.on_batch([market])[0] + resumed.on_eof()[0]
    rows = [r for o in outs for r in o.rows]
    assert [(r.features["news_count"], r.features["news_sentiment"]) for r in rows if r.features["news_count"]] == [
        (1.0, 0.5)]
    # no market record at all before the end: the news are late (health rows), not lost silently
    lonely = _EngineLogic(make, None)
    lonely.on_batch([[(item, 0.5)]])
    assert [o.late for o in lonely.on_eof()[0]] == [[item]]
