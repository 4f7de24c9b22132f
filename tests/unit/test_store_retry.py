"""Store failures are visible: bounded retries of transient errors, permanent ones at once, counted health rows."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from ccf.engine import EngineOut
from ccf.errors import ConfigError, SinkError
from ccf.settings import QuestDBSettings, Settings
from ccf.store.duckdb_store import DuckDBStore
from ccf.store.questdb_store import QuestDBHTTPError, check_questdb, is_transient, with_retries
from ccf.store.sinks import all_tables, health_rows
from ccf.store.tables import HEALTH


def test_transient_errors_are_retried_until_success() -> None:
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise httpx.ConnectError("refused")
        return "ok"

    retried: list[int] = []
    assert with_retries(flaky, "write", timeout_s=5, initial_s=0.01, max_s=0.02,
                        on_retry=lambda exc, n, d: retried.append(n)) == "ok"
    assert len(calls) == 3 and retried == [1, 2]


def test_retries_stop_after_the_budget_with_an_error_naming_url_and_setting() -> None:
    def down() -> None:
        raise httpx.ConnectError("refused")

    t0 = time.monotonic()
    with pytest.raises(SinkError) as err:
        with_retries(down, "write of 3 rows to features at CCF_QUESTDB__HTTP_URL=http://q:9000", timeout_s=0.3,
                     initial_s=0.01, max_s=0.05)
    took = time.monotonic() - t0
    assert 0.1 < took < 1.0, took
    msg = str(err.value)
    assert "CCF_QUESTDB__HTTP_URL=http://q:9000" in msg and "CCF_QUESTDB__RETRY_TIMEOUT_S=0.3" in msg


def test_permanent_errors_are_not_retried() -> None:
    calls = 0

    def rejected() -> None:
        nonlocal calls
        calls += 1
        raise QuestDBHTTPError("QuestDB rejected 'CREATE ...': HTTP 400 bad column", 400)

    with pytest.raises(SinkError, match="bad column"):
        with_retries(rejected, "create table health", timeout_s=10, initial_s=0.01)
    assert calls == 1


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.UnsupportedProtocol("ftp"), False),
        (QuestDBHTTPError("x", 503), True),
        (QuestDBHTTPError("x", 400), False),
        (QuestDBHTTPError("x", 401), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_errors_are_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        (QuestDBSettings(http_url="ftp://127.0.0.1:9000"), "CCF_QUESTDB__HTTP_URL='ftp://127.0.0.1:9000' is not"),
        (QuestDBSettings(http_url="http://127.0.0.1:9000", ilp_http_url="tcp://x:9009"), "CCF_QUESTDB__ILP_HTTP_URL"),
        (QuestDBSettings(http_url="http://127.0.0.1:1"), "CCF_QUESTDB__HTTP_URL=http://127.0.0.1:1 cannot be reached"),
    ],
)
def test_an_unusable_questdb_fails_at_once_naming_the_setting(settings: QuestDBSettings, needle: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        check_questdb(settings)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert time.monotonic() - t0 < 2


def _problems(n: int, ts: int = 5) -> EngineOut:
    out = EngineOut()
    out.problems += [{"ts": ts, "venue": "v", "symbol": "A", "error": "ParseError", "reason": "bad json",
                      "raw": f"frame {i % 2}"} for i in range(n)]  # identical pairs too: same content, same ts
    return out


def test_n_problems_with_the_same_time_are_n_rows_and_a_replay_changes_nothing(tmp_path: Path) -> None:
    settings = Settings(_env_prefix="CCF_TEST_UNSET_", run_dir=tmp_path)
    store = DuckDBStore(settings.store.path, all_tables(settings))
    rows = health_rows(_problems(6))
    assert store.upsert("health", rows) == 6
    store.upsert("health", rows)  # the same batch again (a replay after a crash)
    first_half = _problems(6)
    first_half.problems = first_half.problems[:3]
    store.upsert("health", health_rows(first_half))  # a replay that Bytewax cut into a smaller batch
    assert store.query("SELECT count(*), sum(value) FROM health") == [(6, 6.0)]
    store.close()


def test_late_records_are_counted_one_row_each() -> None:
    from types import SimpleNamespace as Late

    out = EngineOut()
    out.late += [Late(venue="v", symbol="A", ts_event=7, price=p) for p in (1, 2, 2)]
    rows = health_rows(out)
    assert [r["kind"] for r in rows] == ["late_simplenamespace"] * 3
    assert len({r["seq"] for r in rows}) == 3 and sum(r["value"] for r in rows) == 3


def test_an_embedded_store_with_an_older_layout_is_named(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute('CREATE TABLE "health" ("ts" BIGINT NOT NULL, "venue" VARCHAR NOT NULL, "symbol" VARCHAR NOT NULL, '
                '"kind" VARCHAR NOT NULL, "value" DOUBLE, "detail" VARCHAR, PRIMARY KEY ("ts", "venue", "symbol", "kind"))')
    con.close()
    with pytest.raises(ConfigError, match=r"older layout.*CCF_STORE__PATH"):
        DuckDBStore(path, [HEALTH])


def test_paths_live_under_the_run_dir_unless_set(tmp_path: Path) -> None:
    s = Settings(_env_prefix="CCF_TEST_UNSET_", run_dir=tmp_path)
    assert s.store.path == tmp_path / "store.duckdb" and s.news.state_path == tmp_path / "news-seen.json"
    assert s.recovery_dir == tmp_path / "recovery" and s.checkpoint_dir.parent == tmp_path
    explicit = Settings(_env_prefix="CCF_TEST_UNSET_", run_dir=tmp_path, store={"path": tmp_path / "x.duckdb"})
    assert explicit.store.path == tmp_path / "x.duckdb"


def test_the_writer_waits_for_a_readers_poll_to_release_the_file(tmp_path: Path) -> None:
    # the Panel app opens the store read-only for one poll: a features flow starting meanwhile waits, not fails
    import subprocess
    import sys

    path = tmp_path / "s.duckdb"
    DuckDBStore(path, [HEALTH]).close()
    reader = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], "
                               "read_only=True); print('open', flush=True); time.sleep(1.5); c.close()", str(path)],
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "open"
    store = DuckDBStore(path, [HEALTH])  # opened once the reader let go
    assert reader.wait(10) == 0
    store.upsert("health", [{"ts": 1, "venue": "v", "symbol": "A", "kind": "k", "value": 1.0, "detail": "", "seq": 0}])
    assert store.query('SELECT count(*) FROM "health"') == [(1,)]
    store.close()
