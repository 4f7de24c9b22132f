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

from ccf.store.tables import Table

logger = logging.getLogger(__name__)

_DUCK_TYPES = {"ts": "BIGINT", "symbol": "VARCHAR", "str": "VARCHAR", "float": "DOUBLE", "int": "BIGINT",
               "bool": "BOOLEAN"}


def create_sql(table: Table) -> str:
    """DDL for ``table``: its dedup keys are the primary key.

    >>> from ccf.store.tables import HEALTH
    >>> print(create_sql(HEALTH))
    CREATE TABLE IF NOT EXISTS "health" ("ts" BIGINT NOT NULL, "venue" VARCHAR NOT NULL, "symbol" VARCHAR NOT NULL, "kind" VARCHAR NOT NULL, "value" DOUBLE, "detail" VARCHAR, PRIMARY KEY ("ts", "venue", "symbol", "kind"))
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
        self.con = duckdb.connect(str(path))
        for t in tables:
            self.con.execute(create_sql(t))
        logger.info("embedded store at %s", path)

    def upsert(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        t = self.tables[table]
        names = t.column_names
        data = [tuple(_clean(r.get(n)) for n in names) for r in rows]
        if not data:
            return 0
        cols = ", ".join(f'"{n}"' for n in names)
        marks = ", ".join("?" for _ in names)
        self.con.executemany(f'INSERT OR REPLACE INTO "{table}" ({cols}) VALUES ({marks})', data)
        return len(data)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params or []).fetchall()

    def close(self) -> None:
        self.con.close()


def _clean(v: Any) -> Any:
    # NaN becomes NULL, as in QuestDB, so "no value" reads the same everywhere
    if isinstance(v, float) and v != v:
        return None
    return v
