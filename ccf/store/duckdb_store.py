"""The embedded store: one DuckDB file with the same tables as QuestDB and idempotent upserts.

Used when no QuestDB is configured (``make run`` on a fresh machine). One writer at a time: the flow routes every
write through a single sink partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ccf.errors import ConfigError
from ccf.store.tables import Table

logger = logging.getLogger(__name__)

_ARROW_TYPES = {"ts": pa.int64(), "symbol": pa.string(), "str": pa.string(), "float": pa.float64(), "int": pa.int64(),
                "bool": pa.bool_()}
_DUCK_TYPES = {"ts": "BIGINT", "symbol": "VARCHAR", "str": "VARCHAR", "float": "DOUBLE", "int": "BIGINT",
               "bool": "BOOLEAN"}


def create_sql(table: Table) -> str:
    """DDL for ``table``: its dedup keys are the primary key.

    >>> from ccf.store.tables import HEALTH
    >>> print(create_sql(HEALTH))
    CREATE TABLE IF NOT EXISTS "health" ("ts" BIGINT NOT NULL, "venue" VARCHAR NOT NULL, "symbol" VARCHAR NOT NULL, "kind" VARCHAR NOT NULL, "value" DOUBLE, "detail" VARCHAR, "seq" BIGINT NOT NULL, PRIMARY KEY ("ts", "venue", "symbol", "kind", "seq"))
    """
    cols = []
    for name, kind in table.columns:
        null = " NOT NULL" if name in table.keys else ""
        cols.append(f'"{name}" {_DUCK_TYPES[kind]}{null}')
    keys = ", ".join(f'"{k}"' for k in table.keys)
    return f'CREATE TABLE IF NOT EXISTS "{table.name}" ({", ".join(cols)}, PRIMARY KEY ({keys}))'


class DuckDBStore:
    """Upserting writer (and small reader) over one DuckDB file."""

    def __init__(self, path: Path, tables: Sequence[Table]) -> None:
        self.path = path
        self.tables = {t.name: t for t in tables}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = _connect(path)
        for t in tables:
            self.con.execute(create_sql(t))
            self._check_layout(t)
        logger.info("embedded store at %s", path)

    def _check_layout(self, t: Table) -> None:
        """CREATE TABLE IF NOT EXISTS keeps a file's older layout: columns added since (new features, a feature set's
        own) are added to it, as QuestDB adds them on write; a file whose keys differ is refused, clearly."""
        have = [r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [t.name]).fetchall()]
        missing = [(n, kind) for n, kind in t.columns if n not in have]
        if any(n in t.keys for n, _ in missing) or not set(t.keys) <= set(have):
            self.con.close()
            raise ConfigError(f"the embedded store {self.path} holds table {t.name} with an older layout "
                              f"({', '.join(n for n, _ in missing)} missing); move the file away or set "
                              f"CCF_STORE__PATH (or CCF_RUN_DIR) to a new one")
        for n, kind in missing:
            self.con.execute(f'ALTER TABLE "{t.name}" ADD COLUMN "{n}" {_DUCK_TYPES[kind]}')
        if missing:
            logger.info("embedded store %s: added %d column(s) to %s (%s)", self.path, len(missing), t.name,
                        ", ".join(n for n, _ in missing[:8]) + (" ..." if len(missing) > 8 else ""))

    def upsert(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        t = self.tables[table]
        names = t.column_names
        # an integer key a row leaves out (a discriminator such as health.seq) reads as 0, as keys cannot be NULL
        zero = {n for n, kind in t.columns if kind == "int" and n in t.keys}
        data = [tuple(_clean(r.get(n, 0 if n in zero else None)) for n in names) for r in rows]
        if not data:
            return 0
        # one statement for the batch (row-by-row executemany costs milliseconds a row); a key given twice keeps
        # its last row, as upserts one after the other would
        at = [names.index(k) for k in t.keys]
        last = {tuple(row[i] for i in at): row for row in data}
        batch = pa.table({n: pa.array([row[i] for row in last.values()], type=_ARROW_TYPES[kind])
                          for i, (n, kind) in enumerate(t.columns)})
        cols = ", ".join(f'"{n}"' for n in names)
        self.con.register("ccf_batch", batch)
        try:
            self.con.execute(f'INSERT OR REPLACE INTO "{table}" ({cols}) SELECT {cols} FROM ccf_batch')
        finally:
            self.con.unregister("ccf_batch")
        return len(data)

    def high_water(self, table: str, ts: str, by: Sequence[str]) -> dict[tuple[str, ...], int]:
        """The newest ``ts`` (microseconds) per ``by`` series in ``table`` (see :mod:`ccf.store.high_water`)."""
        cols = ", ".join(f'"{c}"' for c in by)
        rows = self.con.execute(f'SELECT {cols}, max("{ts}") FROM "{table}" GROUP BY {cols}').fetchall()
        return {tuple(str(v) for v in r[:-1]): int(r[-1]) // 1000 for r in rows}

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params or []).fetchall()

    def close(self) -> None:
        self.con.close()


LOCK_WAIT_S = 30.0
"""How long the writer waits for a reader's lock: the Panel app opens the file read-only for one poll at a time."""


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A write connection to ``path``, waiting while another process holds the file (a poll of the app) instead of
    failing the flow; a lock held longer than :data:`LOCK_WAIT_S` (another writer) is a one-line error."""
    import time

    deadline = time.monotonic() + LOCK_WAIT_S
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise ConfigError(f"the embedded store {path} is held by another process for {LOCK_WAIT_S:g} s "
                                  f"({' '.join(str(exc).split())[:200]}); stop it or set CCF_STORE__PATH") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _clean(v: Any) -> Any:
    # NaN becomes NULL, as in QuestDB, so "no value" reads the same everywhere
    if isinstance(v, float) and v != v:
        return None
    return v
