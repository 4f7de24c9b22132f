"""Every query of every provisioned Grafana dashboard runs on a real QuestDB filled by the real features flow.

The features flow runs on the synthetic venue for 60 s of event time into uuid-prefixed tables, with a few faults
injected into its input the way a venue would produce them (a dropped book diff, the snapshot that resyncs it, a late
trade, a line that does not parse), so the health panels have something to count. What that run cannot produce
goes in through the store writer, made by the code that makes it live: websocket reconnects and Kafka consumer lag
(the entries the live connector and the Kafka source hand the features flow, through its own dead-letter step and
``health_rows``) and news items (the ``news`` table's layout). Each query is expanded the way its datasource would
(:mod:`dashboards.sql`, both flavours), with the tables renamed to the prefixed ones, the time range around the data
and every variable set from its own variable query; it must run and return rows, over HTTP ``/exec`` and, for the
PostgreSQL flavour, over the PG wire that Grafana's PostgreSQL datasource uses.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from bytewax.testing import run_main

from ccf.errors import ParseError
from ccf.ingest.health import health, ws_health
from ccf.schemas import Trade
from ccf.settings import Settings
from ccf.sources import RecordSource
from ccf.store.questdb_store import QuestDBWriter
from ccf.store.sinks import health_rows
from ccf.store.tables import HEALTH, NEWS
from ccf.synthetic import SyntheticVenue
from ccf.wsource import HealthEvent
from dashboards.sql import TABLES, expand, variables_used
from flows.features import _dead_letters, build_flow
from tests.conftest import Services

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "dashboards" / "grafana"
S = 1_000_000_000


def test_committed_dashboards_match_their_generator() -> None:
    out = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _with_faults(symbol: str) -> Callable[[], Iterator[Any]]:
    """The synthetic venue's records for ``symbol``; BTC-USDT also gets a gap, its resync, a late trade and junk."""

    def records() -> Iterator[Any]:
        venue = SyntheticVenue([symbol], seed=7)
        yield from venue.snapshots()
        for step in itertools.count(1):
            batch: list[Any] = venue.step()
            if symbol == "BTC-USDT":
                if step == 100:  # one diff lost on the wire: the next one leaves a gap in the update ids
                    first_diff = next(i for i, r in enumerate(batch) if type(r).__name__ == "BookDelta")
                    del batch[first_diff]
                elif step == 120:  # the REST snapshot a venue adapter fetches after a gap
                    batch.append(venue.snapshot(symbol))
                elif step == 200:  # a trade that arrives 3 s after its window closed
                    batch.append(Trade(venue="synthetic", symbol=symbol, ts_event=venue.now_ns - 3 * S,
                                       ts_recv=venue.now_ns, price=60_000.0, size=0.001, side="buy", trade_id="late-1"))
                elif step == 250:
                    batch.append(ParseError("not JSON", venue="synthetic", symbol=symbol, raw=b'{"e":'))
            yield from batch

    return records


def _sql(http_url: str, query: str) -> dict[str, Any]:
    resp = httpx.get(f"{http_url}/exec", params={"query": query}, timeout=60)
    body: dict[str, Any] = resp.json()
    assert resp.status_code == 200 and "error" not in body, f"{body.get('error')}\n{query}"
    return body


T0 = 1_704_067_200 * S  # the synthetic venue's first event


def _extra_health() -> list[dict[str, Any]]:
    """Reconnects of an in-process venue connection and consumer lag of the Kafka source, as the features flow
    writes them (its dead-letter step, then ``health_rows``); a live run stamps them with wall-clock time, here
    they sit in the data's minute."""
    entries: list[dict[str, Any]] = []
    for k, kind in enumerate(("disconnected", "stalled", "disconnected")):
        event = HealthEvent(conn="synthetic", session=k, ts=T0 + (10 + k) * S, kind=kind, detail="test")
        entries.append(ws_health(event, "synthetic"))
    for k, behind in enumerate((900, 120, 4)):  # the shape of the Kafka source's lag() entries
        for name in ("ccf.book:0", "ccf.trades:0"):
            entries.append({"kind": "consumer_lag", "venue": "kafka", "symbol": name, "ts": T0 + (5 + 10 * k) * S,
                            "value": float(behind), "reason": f"{behind} messages behind on {name}"})
    rows = health_rows(_dead_letters(entries))
    # a restarted role of ccf stack, as its event listener stores it (ccf.stack.events: value = restarts so far)
    restart = health("role_restarted", "stack", "features", symbol="features", ts=T0 + 40 * S, value=1.0,
                     detail="pid 4242")
    rows.append({**{k: restart[k] for k in ("ts", "venue", "symbol", "kind", "value", "detail")}, "seq": 1})
    return rows


NEWS_ITEMS = [
    {"fetched": T0 + 5 * S, "id": "n1", "feed": "coindesk", "title": "Bitcoin rallies", "link": "https://x.org/1",
     "published": T0, "sentiment": 0.6, "bases": "BTC"},
    {"fetched": T0 + 30 * S, "id": "n2", "feed": "decrypt", "title": "Ether slips", "link": "https://x.org/2",
     "published": None, "sentiment": -0.2, "bases": "ETH"},
    {"fetched": T0 + 90 * S, "id": "n3", "feed": "decrypt", "title": "Both move", "link": "https://x.org/3",
     "published": T0 + 80 * S, "sentiment": 0.1, "bases": "BTC,ETH"},
]


@pytest.fixture(scope="module")
def filled(services: Services) -> Iterator[tuple[str, str]]:
    """(QuestDB URL, table prefix) after one features run; the prefixed tables are dropped afterwards."""
    url = services.questdb_http_url
    prefix = f"dash_{uuid.uuid4().hex[:12]}_"
    settings = Settings(stop_after=60, venues={"speed": 0}, kafka={"bootstrap_servers": ""},
                        questdb={"http_url": url, "pg_port": services.questdb_pg_port, "table_prefix": prefix})
    source = RecordSource({f"synthetic:{s}": _with_faults(s) for s in ("BTC-USDT", "ETH-USDT")}, stop_after_s=60)
    try:
        run_main(build_flow(settings, source=source))
        extra = QuestDBWriter.from_settings(settings.questdb, [HEALTH, NEWS])
        try:
            extra.upsert("health", _extra_health())
            extra.upsert("news", NEWS_ITEMS)
        finally:
            extra.close()
        deadline = time.monotonic() + 60  # WAL tables become readable a moment after the write: wait for all
        last: dict[str, int] = {}
        while True:
            counts = {t: _sql(url, f"SELECT count() FROM {prefix}{t}")["dataset"][0][0] for t in TABLES}
            if counts == last and counts["features"] == 120 and counts["health"] >= 13 and counts["news"] == 3:
                break
            assert time.monotonic() < deadline, f"tables not filled: {counts}"
            last = counts
            time.sleep(1.0)
        yield url, prefix
    finally:
        for t in TABLES:  # teardown must not hide the test's own failure
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/exec", params={"query": f"DROP TABLE IF EXISTS {prefix}{t}"}, timeout=30)


def _queries(panel: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for p in [panel, *panel.get("panels", [])]:
        for t in p.get("targets", []):
            yield f"{p['title']} [{t['refId']}]", t["rawSql"]


@contextlib.contextmanager
def _pg(services: Services) -> Iterator[Any]:
    """A connection over QuestDB's PG wire, as Grafana's PostgreSQL datasource opens one (default credentials)."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=services.questdb_pg_port, user="admin", password="quest",
                         dbname="qdb", autocommit=True, connect_timeout=30) as con:
        yield con


@pytest.mark.integration
@pytest.mark.slow
def test_every_panel_query_runs_and_returns_rows(filled: tuple[str, str], services: Services) -> None:
    url, prefix = filled
    t0 = datetime(2024, 1, 1, tzinfo=UTC) - timedelta(minutes=5)
    t1 = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=5)
    files = sorted((GRAFANA / "dashboards" / "json").glob("*/*.json"))
    assert {f.parent.name for f in files} == {"questdb", "postgres"} and len(files) == 8
    failures: list[str] = []
    checked = wired = 0
    pg = contextlib.ExitStack()
    con = pg.enter_context(_pg(services))
    for f in files:
        board = json.loads(f.read_text())
        flavour = f.parent.name

        def run(sql: str, values: dict[str, list[str]], flavour: str = flavour) -> dict[str, Any]:
            return _sql(url, expand(sql, time_from=t0, time_to=t1, interval_ms=5000, variables=values,
                                    flavor=flavour, table_prefix=prefix))

        # variables in order (symbol depends on venue), each set to everything its own query offers
        values: dict[str, list[str]] = {}
        for var in board["templating"]["list"]:
            rows = run(var["query"], values)["dataset"]
            assert rows, f"{f.name}: variable {var['name']} offers nothing"
            values[var["name"]] = [str(r[0]) for r in rows]
        assert values.get("venue") == ["synthetic"] and values.get("symbol") == ["BTC-USDT", "ETH-USDT"]
        # repeated panels (and panels under a repeated row) get one value of their variable at a time, as in
        # Grafana; single-value variables get their first value
        singles = {v["name"] for v in board["templating"]["list"] if not v["multi"]}
        row_repeat: str | None = None
        for panel in board["panels"]:
            if panel["type"] == "row":
                row_repeat = panel.get("repeat")
                continue
            if panel["type"] == "text":
                assert panel["description"].startswith("**No table yet.**"), panel["title"]
                continue
            repeats = [r for r in (row_repeat, panel.get("repeat")) if r]
            for name, sql in _queries(panel):
                unknown = variables_used(sql) - set(values)
                assert not unknown, f"{f.name} {name}: variables {unknown} are not defined on the dashboard"
                for picks in itertools.product(*[{values[r][0], values[r][-1]} for r in repeats]):
                    chosen = {k: (v[:1] if k in singles else v) for k, v in values.items()}
                    chosen.update({r: [v] for r, v in zip(repeats, picks, strict=True)})
                    try:
                        body = run(sql, chosen)
                    except AssertionError as exc:
                        failures.append(f"{flavour}/{f.name} {name}: {exc}")
                        continue
                    checked += 1
                    if not body["dataset"]:
                        failures.append(f"{flavour}/{f.name} {name} ({chosen}): no rows")
                    if flavour == "postgres":  # the same text over the PG wire, as Grafana's datasource sends it
                        text = expand(sql, time_from=t0, time_to=t1, interval_ms=5000, variables=chosen,
                                      flavor="postgres", table_prefix=prefix)
                        try:
                            rows = con.execute(text).fetchall()
                        except Exception as exc:  # any driver error is a failure of this query, reported with it
                            failures.append(f"PG wire {f.name} {name}: {type(exc).__name__}: {exc}\n{text}")
                            continue
                        wired += 1
                        if len(rows) != len(body["dataset"]):
                            failures.append(f"PG wire {f.name} {name}: {len(rows)} rows, HTTP {len(body['dataset'])}")
    pg.close()
    assert not failures, "\n".join(failures)
    assert checked >= 2 * 30  # two flavours of every query, repeated panels more than once
    assert wired == checked // 2


@pytest.mark.integration
def test_health_panels_see_the_injected_faults(filled: tuple[str, str]) -> None:
    url, prefix = filled
    kinds = {r[0]: r[1] for r in _sql(url, f"SELECT kind, sum(value) FROM {prefix}health")["dataset"]}
    assert kinds.get("SequenceGapError", 0) >= 1, kinds
    assert kinds.get("late_trade", 0) >= 1, kinds
    assert kinds.get("ParseError", 0) >= 1, kinds
    epochs = _sql(url, f"SELECT symbol, max(epoch) FROM {prefix}features")["dataset"]
    assert dict(map(tuple, epochs)) == {"BTC-USDT": 1, "ETH-USDT": 0}


@pytest.mark.integration
def test_the_app_poller_reads_the_same_tables(filled: tuple[str, str]) -> None:
    from dashboards.data import Poller
    from dashboards.readers import QuestDBReader

    url, prefix = filled
    poller = Poller(QuestDBReader(url, prefix), feature_columns=("mid", "epoch", "depth_bid_10"), max_windows=50)
    assert poller.poll(force=True), poller.snapshot().error
    snap = poller.snapshot()
    assert snap.keys == ["synthetic:BTC-USDT", "synthetic:ETH-USDT"]
    assert all(len(rows) == 50 for rows in snap.features.values())
    assert snap.latest_window_end() == T0 + 60 * S  # 60 s after the synthetic venue's start
    assert {m for _, m, _ in snap.predictions} == {"naive", "ewma", "river_lr", "river_ts"}
    assert {s["model"] for s in snap.scores} == {"naive", "ewma", "river_lr", "river_ts"}
    assert {h["kind"] for h in snap.health} == {"SequenceGapError", "late_trade", "ParseError", "disconnected",
                                                "stalled", "consumer_lag", "role_restarted"}
    lag = {h["symbol"]: h["last"] for h in snap.health if h["kind"] == "consumer_lag"}
    assert lag == {"ccf.book:0": 4.0, "ccf.trades:0": 4.0}  # the newest level, not a sum
    assert sum(h["n"] for h in snap.health if h["kind"] == "disconnected") == 2.0
    assert snap.news is not None and [n["title"] for n in snap.news] == ["Both move", "Ether slips", "Bitcoin rallies"]
    assert snap.news[0]["sentiment"] == 0.1 and snap.news[0]["fetched"] == T0 + 90 * S
