"""The session's QuestDB for real: WAL table with DEDUP UPSERT KEYS, ILP over HTTP twice, read back over HTTP and PG."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from questdb import Sender

from ccf.settings import Settings

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 23, 59, 58, tzinfo=UTC)  # rows span two days, so two partitions
ROWS = [
    (T0 + timedelta(seconds=i // 2), sym, 100.0 + i * 0.25, i) for i, sym in enumerate(["BTC-USDT", "ETH-USDT"] * 4)
]


def _sql(settings: Settings, query: str) -> dict[str, Any]:
    resp = httpx.get(f"{settings.questdb.http_url}/exec", params={"query": query}, timeout=30)
    body: dict[str, Any] = resp.json()
    assert resp.status_code == 200, body
    return body


def _write(settings: Settings, table: str, rows: list[tuple[datetime, str, float, int]]) -> None:
    addr = settings.questdb.ilp_url.removeprefix("http://").rstrip("/")
    with Sender.from_conf(f"http::addr={addr};") as sender:
        for ts, sym, price, qty in rows:
            sender.row(table, symbols={"symbol": sym}, columns={"price": price, "qty": qty}, at=ts)
        sender.flush()


def _wait_applied(settings: Settings, table: str, timeout_s: float = 30) -> None:
    """Poll until the WAL of ``table`` is fully applied (writer transaction caught up with the sequencer)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = _sql(settings, f"select writerTxn, sequencerTxn, suspended from wal_tables() where name = '{table}'")
        if body["dataset"]:
            writer, sequencer, suspended = body["dataset"][0]
            assert not suspended, f"WAL apply of {table} is suspended"
            if writer == sequencer and writer > 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"WAL of {table} not applied within {timeout_s} s")


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_dedup_upsert_over_ilp_http_read_back_over_http_and_pg(
    settings: Settings, questdb_table: Callable[..., str]
) -> None:
    table = questdb_table()
    _sql(
        settings,
        f'CREATE TABLE "{table}" (symbol SYMBOL, price DOUBLE, qty LONG, ts TIMESTAMP) '
        "TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, symbol)",
    )
    _write(settings, table, ROWS)
    _write(settings, table, ROWS)  # the same rows again: deduplicated, not doubled
    _wait_applied(settings, table)

    expected = [(_iso(ts), sym, price, qty) for ts, sym, price, qty in sorted(ROWS, key=lambda r: (r[0], r[1]))]
    body = _sql(settings, f'select ts, symbol, price, qty from "{table}" order by ts, symbol')
    assert [tuple(r) for r in body["dataset"]] == expected
    assert _sql(settings, f'select count() from "{table}"')["dataset"] == [[len(ROWS)]]

    # an upsert of one key replaces that row's values
    ts0, sym0, _, _ = ROWS[0]
    _write(settings, table, [(ts0, sym0, 1.5, 999)])
    _wait_applied(settings, table)

    q = settings.questdb
    with psycopg.connect(
        host=q.pg_host,
        port=q.pg_port,
        user=q.username,
        password=q.password.get_secret_value(),
        dbname=q.database,
        autocommit=True,
    ) as conn:
        got = conn.execute(f'select ts, symbol, price, qty from "{table}" order by ts, symbol').fetchall()
    want = [
        (ts, sym, 1.5 if (ts, sym) == (ts0, sym0) else p, 999 if (ts, sym) == (ts0, sym0) else n)
        for ts, sym, p, n in sorted(ROWS, key=lambda r: (r[0], r[1]))
    ]
    assert len(got) == len(ROWS)
    assert [(g[0].replace(tzinfo=UTC), g[1], g[2], g[3]) for g in got] == want
    partitions = _sql(settings, f"select count() from table_partitions('{table}')")["dataset"]
    assert partitions == [[2]]
