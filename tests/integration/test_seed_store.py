"""A seed-set run writes its rows whole to both stores: DuckDB (a table laid out for the seed set) and QuestDB.

Rows come from the engine over the real ETHUSDT capture (3 s windows, ``CCF_FEATURES__FEATURE_SET=seed``). The
features table has the seed columns only when the settings choose the seed set; a DuckDB file laid out for the
default set refuses a seed run with a clear error (move the file), and QuestDB adds the missing columns to a
``features`` table made by a default run (ILP creates columns), so the old rows stay and the new ones are whole.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccf.capture.readers import read_records
from ccf.engine import EngineConfig, SymbolEngine
from ccf.features.bookkeeper import SyncedBook
from ccf.features.seed import SEED_SET, seed_feature_names
from ccf.schemas import FeatureRow
from ccf.settings import Settings
from ccf.store.duckdb_store import DuckDBStore
from ccf.store.questdb_store import QuestDBWriter
from ccf.store.sinks import all_tables
from ccf.store.tables import feature_row_values
from tests.datafiles import data_file

pytestmark = pytest.mark.integration
CHECKED = ["mid", "ofi", "lr_bid_size_1", "rel_ask_price_3", "vwap_buy_10", "mid_ema_20"]


def _seed_rows(settings: Settings) -> list[FeatureRow]:
    recs = itertools.islice(read_records([data_file("hftbacktest_binance_raw_ws/spot_ethusdt_20240808.gz")]), 12_000)
    cfg = dataclasses.replace(EngineConfig.from_settings(settings), models=())
    eng = SymbolEngine("binance", "ETH-USDT", SyncedBook("binance", "ETH-USDT"), cfg)
    rows = [*eng.on_batch(list(recs)).rows, *eng.on_eof().rows]
    assert len(rows) > 20 and all(r.feature_set == SEED_SET for r in rows)
    assert {r.window_end - r.window_start for r in rows} == {3_000_000_000}
    return [r for r in rows if r.book_valid]


def _seed(settings: Settings) -> Settings:
    return settings.model_copy(update={"features": type(settings.features)(feature_set="seed")})


def _same(got: Any, want: float | None) -> bool:
    if want is None or want != want:
        return got is None
    return got is not None and math.isclose(got, want, rel_tol=1e-12)


def test_seed_rows_whole_in_duckdb_also_in_a_file_a_default_run_made(tmp_path: Path) -> None:
    book = Settings(_env_prefix="CCF_TEST_NONE_")
    seed = _seed(book)
    assert seed.features.window_s == 3.0 and book.features.window_s == 1.0
    (features,) = [t for t in all_tables(seed) if t.name == "features"]
    assert set(seed_feature_names()) <= set(features.column_names)
    assert not set(seed_feature_names()) & {c for t in all_tables(book) for c in t.column_names}
    rows = _seed_rows(seed)
    store = DuckDBStore(tmp_path / "seed.duckdb", all_tables(seed))
    store.upsert("features", [feature_row_values(r) for r in rows])
    cols = ", ".join(f'"{c}"' for c in CHECKED)
    got = store.query(f'SELECT window_start, feature_set, {cols} FROM features ORDER BY window_start')
    store.close()
    assert len(got) == len(rows)
    for r, g in zip(rows, got, strict=True):
        assert g[:2] == (r.window_start, SEED_SET)
        assert all(_same(v, r.features[c]) for c, v in zip(CHECKED, g[2:], strict=True)), (r.window_start, g)
    # a file a default run made takes seed rows: the seed columns are added to it (as QuestDB adds them)
    old = DuckDBStore(tmp_path / "book.duckdb", all_tables(book))
    old.close()
    grown = DuckDBStore(tmp_path / "book.duckdb", all_tables(seed))
    grown.upsert("features", [feature_row_values(r) for r in rows[:5]])
    assert grown.query(f'SELECT count(*), count("{CHECKED[-1]}") FROM features') == [(5, 5)]
    grown.close()


def test_seed_rows_whole_in_questdb_also_in_a_table_a_default_run_made(settings: Settings) -> None:
    prefix = f"t_{uuid.uuid4().hex[:12]}_"
    book = settings.model_copy(update={"questdb": settings.questdb.model_copy(update={"table_prefix": prefix})})
    seed = _seed(book)
    rows = _seed_rows(seed)
    QuestDBWriter.from_settings(book.questdb, all_tables(book)).close()  # a default run made the table
    writer = QuestDBWriter.from_settings(seed.questdb, all_tables(seed))
    try:
        writer.upsert("features", [feature_row_values(r) for r in rows])
    finally:
        writer.close()
    table = prefix + "features"
    cols = ", ".join(f'"{c}"' for c in CHECKED)
    sql = f'SELECT cast(window_start AS LONG), feature_set, {cols} FROM "{table}" ORDER BY window_start'
    deadline, got = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        body = httpx.get(f"{settings.questdb.http_url}/exec", params={"query": sql}, timeout=30).json()
        got = body.get("dataset", [])
        if len(got) == len(rows):
            break
        time.sleep(0.3)
    try:
        assert len(got) == len(rows)
        for r, g in zip(rows, got, strict=True):
            assert g[0] == r.window_start // 1000 and g[1] == SEED_SET  # QuestDB timestamps are microseconds
            assert all(_same(v, r.features[c]) for c, v in zip(CHECKED, g[2:], strict=True)), (r.window_start, g)
    finally:
        for t in all_tables(seed):
            httpx.get(f"{settings.questdb.http_url}/exec", params={"query": f'DROP TABLE IF EXISTS "{prefix}{t.name}"'},
                      timeout=30)
