"""The app's data layer: bounded incremental buffers, latest scores, health sums, news, and a locked store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccf.settings import Settings
from ccf.store.duckdb_store import DuckDBStore
from ccf.store.sinks import all_tables
from dashboards.data import Poller, make_poller
from dashboards.readers import DuckDBReader, QuestDBReader, _QuestSession

S = 1_000_000_000
T0 = 1_704_067_200 * S


def _feature(i: int, symbol: str) -> dict[str, Any]:
    return {"window_start": T0 + i * S, "window_end": T0 + (i + 1) * S, "venue": "v", "symbol": symbol,
            "feature_set": "book.v1", "book_valid": True, "epoch": 0, "mid": 100.0 + i, "book_events": 3.0,
            "trade_count": 1.0, "depth_bid_1": 1.0, "depth_ask_1": 2.0}


def _prediction(i: int, symbol: str, model: str, h: int) -> dict[str, Any]:
    return {"issued_at": T0 + (i + 1) * S, "target_time": T0 + (i + 1 + h) * S, "venue": "v", "symbol": symbol,
            "model": model, "model_version": "online", "horizon_steps": h, "horizon_s": float(h), "value": 0.001 * i,
            "q10": -0.01, "q50": 0.0, "q90": 0.01}


def _score(i: int, symbol: str, model: str, h: int) -> dict[str, Any]:
    return {"window_end": T0 + (i + 1) * S, "venue": "v", "symbol": symbol, "model": model, "horizon_steps": h,
            "n": i, "mae": 0.1, "rmse": 0.2, "hit_rate": 0.5, "pinball": 0.05, "coverage": 0.8, "skill": 0.01 * i}


def _fill(store: DuckDBStore, start: int, stop: int, symbols: tuple[str, ...] = ("A", "B")) -> None:
    for s in symbols:
        store.upsert("features", [_feature(i, s) for i in range(start, stop)])
        store.upsert("predictions", [_prediction(i, s, m, h) for i in range(start, stop) for m in ("naive", "ewma")
                                     for h in (1, 5)])
        store.upsert("scores", [_score(i, s, m, h) for i in range(start, stop) for m in ("naive", "ewma")
                                for h in (1, 5)])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store={"path": tmp_path / "store.duckdb"})


def test_buffers_are_bounded_and_polls_are_incremental(settings: Settings) -> None:
    store = DuckDBStore(settings.store.path, all_tables(settings))
    _fill(store, 0, 200)
    store.upsert("health", [{"ts": T0 + k * S, "venue": "v", "symbol": "A", "kind": "SequenceGapError", "value": 1.0,
                             "detail": "gap"} for k in range(3)])
    store.close()
    poller = make_poller(settings, max_windows=50)
    assert poller.poll(force=True)
    snap = poller.snapshot()
    assert snap.error is None and snap.keys == ["v:A", "v:B"]
    a = snap.features["v:A"]
    assert len(a) == 50 and [r["window_start"] for r in a] == [T0 + i * S for i in range(150, 200)]
    assert a[-1]["mid"] == 299.0 and a[-1]["depth_ask_1"] == 2.0
    assert len(snap.predictions) == 2 * 2 * 2 and all(len(v) <= 50 for v in snap.predictions.values())
    assert snap.predictions[("v:A", "ewma", 5)][-1]["q90"] == 0.01
    # latest score per (venue, symbol, model, horizon) only
    assert len(snap.scores) == 8 and {s["n"] for s in snap.scores} == {199}
    assert [(h["kind"], h["n"]) for h in snap.health] == [("SequenceGapError", 3.0)]
    assert snap.news == ()  # the store makes an empty news table (the features flow writes it)
    assert snap.latest_window_end() == T0 + 200 * S

    store = DuckDBStore(settings.store.path, all_tables(settings))
    _fill(store, 200, 230)
    store.upsert("news", [{"fetched": 1, "id": "x", "feed": "coindesk", "title": "Bitcoin does a thing",
                           "link": "https://example.org/x", "sentiment": 0.0, "bases": "BTC"}])
    store.close()
    assert poller.poll(force=True)
    snap2 = poller.snapshot()
    a2 = snap2.features["v:A"]
    assert snap2.version == snap.version + 1
    assert len(a2) == 50 and a2[-1]["window_start"] == T0 + 229 * S and a2[0]["window_start"] == T0 + 180 * S
    starts = [r["window_start"] for r in a2]
    assert starts == sorted(set(starts))  # the look-back re-read nothing twice
    assert snap2.news is not None and snap2.news[0]["title"] == "Bitcoin does a thing"
    assert snap.features["v:A"] is a  # the earlier snapshot is untouched


def test_least_recently_updated_key_is_dropped(settings: Settings) -> None:
    store = DuckDBStore(settings.store.path, all_tables(settings))
    _fill(store, 0, 10, symbols=("A", "B", "C"))
    store.close()
    poller = make_poller(settings)
    poller.max_keys = 2
    poller.poll(force=True)
    assert len(poller.snapshot().features) == 2 and len(poller.snapshot().predictions) <= 2


def test_missing_store_is_reported_not_raised(settings: Settings) -> None:
    poller = make_poller(settings)
    assert poller.poll(force=True)
    snap = poller.snapshot()
    assert snap.error is not None and "no embedded store" in snap.error and snap.features == {}
    assert not poller.poll(force=True)  # the same trouble again changes nothing


def test_a_store_locked_by_a_writer_is_read_from_a_copy(settings: Settings, tmp_path: Path) -> None:
    store = DuckDBStore(settings.store.path, all_tables(settings))
    _fill(store, 0, 20)
    store.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "c.execute(\"INSERT INTO health VALUES (1, 'v', 'A', 'ParseError', 1.0, 'x', 0)\"); print('ok', flush=True); "
         "time.sleep(60)", str(settings.store.path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        reader = DuckDBReader(settings.store.path)
        poller = Poller(reader, feature_columns=("mid",))
        assert poller.poll(force=True), poller.snapshot().error
        snap = poller.snapshot()
        assert reader.copied and snap.error is None
        assert len(snap.features["v:B"]) == 20
        assert [h["kind"] for h in snap.health] == ["ParseError"]  # the writer's uncheckpointed row, from its WAL
    finally:
        holder.kill()
        holder.wait(10)


def test_questdb_reader_converts_timestamps_and_uses_questdb_sql() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sql = request.url.params["query"]
        seen.append(sql)
        if 'FROM "p_features" LATEST ON window_start' in sql:  # the newest window per symbol
            body: dict[str, Any] = {"columns": [{"name": "venue", "type": "SYMBOL"}, {"name": "symbol", "type": "SYMBOL"},
                                                {"name": "m", "type": "TIMESTAMP"}],
                                    "dataset": [["v", "A", "2024-01-01T00:00:59.000000Z"]]}
        elif "FROM tables()" in sql:
            body = {"columns": [{"name": "table_name", "type": "STRING"}], "dataset": []}
        elif 'FROM "p_features"' in sql:
            body = {"columns": [{"name": "window_start", "type": "TIMESTAMP"}, {"name": "window_end", "type": "TIMESTAMP"},
                                {"name": "venue", "type": "SYMBOL"}, {"name": "symbol", "type": "SYMBOL"},
                                {"name": "mid", "type": "DOUBLE"}],
                    "dataset": [["2024-01-01T00:00:59.000000Z", "2024-01-01T00:01:00.000000Z", "v", "A", 101.5]]}
        else:
            body = {"columns": [], "dataset": []}
        return httpx.Response(200, content=json.dumps(body))

    reader = QuestDBReader("http://qdb:9000/", prefix="p_")
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        session = _QuestSession(reader, client)

        class _Fixed:
            def __enter__(self) -> _QuestSession:
                return session

            def __exit__(self, *exc: object) -> None:
                return None

        reader.session = lambda: _Fixed()  # type: ignore[method-assign]  # the mock transport instead of a server
        poller = Poller(reader, feature_columns=("mid",), max_windows=10)
        assert poller.poll(force=True)
    snap = poller.snapshot()
    assert snap.features["v:A"][0]["window_end"] == T0 + 60 * S and snap.features["v:A"][0]["mid"] == 101.5
    assert snap.news is None
    # QuestDB's own SQL: timestamps as micros cast to TIMESTAMP, latest scores with LATEST ON, prefixed tables
    joined = "\n".join(seen)
    assert f"(venue = 'v' AND symbol = 'A' AND window_start > cast({(T0 + 49 * S) // 1000} as timestamp))" in joined
    assert 'FROM "p_scores" LATEST ON window_end PARTITION BY venue, symbol, model, horizon_steps' in joined
    assert "table_name = 'p_news'" in joined


def test_poll_gap_grows_with_slow_reads(settings: Settings) -> None:
    store = DuckDBStore(settings.store.path, all_tables(settings))
    _fill(store, 0, 5)
    store.close()
    poller = make_poller(settings)
    assert poller.poll()
    assert poller.min_gap_s > 0
    poller.min_gap_s = 60.0
    assert not poller.poll()  # too soon after the last one
    t0 = time.monotonic()
    assert poller.poll(force=True) and time.monotonic() - t0 < 30


@pytest.mark.parametrize("name", ["dashboards.sql", "dashboards.readers", "dashboards.kinds", "dashboards.panels"])
def test_doctests(name: str) -> None:
    # dashboards/ is outside pytest's doctest paths (tests, ccf): run its examples here
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


def test_a_symbol_that_lags_the_others_loses_no_windows(settings: Settings) -> None:
    store = DuckDBStore(settings.store.path, all_tables(settings))
    store.upsert("features", [_feature(i, "A") for i in range(200)] + [_feature(i, "B") for i in range(100)])
    store.close()
    poller = Poller(DuckDBReader(settings.store.path), feature_columns=("mid",), max_windows=300, lookback_windows=5)
    assert poller.poll(force=True)
    assert [len(poller.snapshot().features[k]) for k in ("v:A", "v:B")] == [200, 100]
    # A runs 50 windows ahead; B catches up 10 windows far behind A's look-back: B's windows must all arrive
    store = DuckDBStore(settings.store.path, all_tables(settings))
    store.upsert("features", [_feature(i, "A") for i in range(200, 250)] + [_feature(i, "B") for i in range(100, 110)])
    store.close()
    assert poller.poll(force=True)
    b = [r["window_start"] for r in poller.snapshot().features["v:B"]]
    assert b == [T0 + i * S for i in range(110)]
    assert len(poller.snapshot().features["v:A"]) == 250


def test_the_app_finds_the_demo_store_unless_the_store_is_set(tmp_path: Path) -> None:
    from dashboards.readers import reader_for

    run = tmp_path / "run"
    auto = Settings(run_dir=run)
    demo, plain = run / "demo" / "store.duckdb", run / "store.duckdb"
    reader = reader_for(auto)
    assert isinstance(reader, DuckDBReader)
    poller = Poller(reader, feature_columns=("mid",))
    poller.poll(force=True)
    assert "no embedded store yet" in str(poller.snapshot().error) and str(demo) in str(poller.snapshot().error)
    for path, symbols in ((plain, ("OLD",)), (demo, ("A", "B"))):  # the demo's store is written last
        store = DuckDBStore(path, all_tables(Settings(store={"path": path})))
        _fill(store, 0, 3, symbols=symbols)
        store.close()
        time.sleep(0.05)
    assert poller.poll(force=True)
    snap = poller.snapshot()
    assert snap.keys == ["v:A", "v:B"] and reader.path == demo
    assert f"embedded store {demo} (written last" in snap.where and "CCF_STORE__PATH chooses" in snap.where
    # an explicit store always wins, even the default path, and even when it does not exist yet
    explicit = reader_for(Settings(run_dir=run, store={"path": plain}))
    assert isinstance(explicit, DuckDBReader) and explicit.candidates == (plain,)
    missing = reader_for(Settings(run_dir=run, store={"path": run / "nope.duckdb"}))
    assert isinstance(missing, DuckDBReader) and missing.candidates == (run / "nope.duckdb",)


def test_health_sums_counts_and_keeps_the_newest_lag(settings: Settings) -> None:
    store = DuckDBStore(settings.store.path, all_tables(settings))
    store.upsert("health", [
        {"ts": T0 + k * S, "venue": "kafka", "symbol": "ccf.book:0", "kind": "consumer_lag", "value": float(v),
         "detail": "", "seq": 0} for k, v in enumerate((500, 40, 7))
    ] + [{"ts": T0 + k * S, "venue": "v", "symbol": "", "kind": "disconnected", "value": 1.0, "detail": "",
          "seq": k} for k in range(2)])
    store.close()
    poller = make_poller(settings)
    assert poller.poll(force=True)
    health = {h["kind"]: h for h in poller.snapshot().health}
    assert health["consumer_lag"]["last"] == 7.0 and health["consumer_lag"]["last_ts"] == T0 + 2 * S
    assert health["disconnected"]["n"] == 2.0
