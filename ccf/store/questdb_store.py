"""QuestDB writer: tables created over HTTP SQL with ``DEDUP UPSERT KEYS``, rows sent over ILP/HTTP.

A write that fails (QuestDB restarting, network) is retried with capped backoff and the rows kept, so the flow
stalls rather than loses data; dedup keys make a retried or replayed write harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import httpx
from questdb import Sender, TimestampNanos

from ccf.errors import SinkError
from ccf.store.tables import Table

logger = logging.getLogger(__name__)

_QDB_TYPES = {"ts": "TIMESTAMP", "symbol": "SYMBOL", "str": "VARCHAR", "float": "DOUBLE", "int": "LONG",
              "bool": "BOOLEAN"}


def create_sql(table: Table) -> str:
    """QuestDB DDL: designated timestamp, daily partitions, WAL, dedup on the table's keys.

    >>> from ccf.store.tables import HEALTH
    >>> print(create_sql(HEALTH))
    CREATE TABLE IF NOT EXISTS "health" ("ts" TIMESTAMP, "venue" SYMBOL, "symbol" SYMBOL, "kind" SYMBOL, "value" DOUBLE, "detail" VARCHAR) TIMESTAMP("ts") PARTITION BY DAY WAL DEDUP UPSERT KEYS("ts", "venue", "symbol", "kind")
    """
    cols = ", ".join(f'"{n}" {_QDB_TYPES[k]}' for n, k in table.columns)
    keys = ", ".join(f'"{k}"' for k in table.keys)
    return (
        f'CREATE TABLE IF NOT EXISTS "{table.name}" ({cols}) TIMESTAMP("{table.designated}") '
        f"PARTITION BY DAY WAL DEDUP UPSERT KEYS({keys})"
    )


def http_sql(http_url: str, sql: str, timeout: float = 30.0) -> dict[str, Any]:
    """Run one SQL statement on QuestDB's HTTP ``/exec``; raise :class:`SinkError` with QuestDB's message."""
    resp = httpx.get(f"{http_url.rstrip('/')}/exec", params={"query": sql}, timeout=timeout)
    body: dict[str, Any] = resp.json()
    if resp.status_code != 200 or "error" in body:
        raise SinkError(f"QuestDB rejected {sql[:80]!r}: {body.get('error', resp.text)}")
    return body


class QuestDBWriter:
    """Creates the tables once, then upserts rows through ILP over HTTP."""

    def __init__(
        self,
        http_url: str,
        tables: Sequence[Table],
        ilp_url: str | None = None,
        table_prefix: str = "",
        max_backoff_s: float = 10.0,
    ) -> None:
        self.http_url = http_url.rstrip("/")
        self.prefix = table_prefix
        self.tables = {t.name: t for t in tables}
        self.max_backoff_s = max_backoff_s
        self.failures = 0
        addr = (ilp_url or http_url).split("://", 1)[-1].rstrip("/")
        self._conf = f"http::addr={addr};auto_flush=off;retry_timeout=2000;"
        self._retry(lambda: [http_sql(self.http_url, create_sql(self._named(t))) for t in tables], "create tables")
        self.sender = Sender.from_conf(self._conf)
        self.sender.establish()  # type: ignore[no-untyped-call]  # the client's stub leaves it untyped

    def _named(self, t: Table) -> Table:
        return Table(self.prefix + t.name, t.columns, t.designated, t.keys) if self.prefix else t

    def upsert(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        t = self.tables[table]
        name = self.prefix + table
        buf = self.sender.new_buffer()
        n = 0
        for r in rows:
            symbols: dict[str, str | None] = {}
            columns: dict[str, Any] = {}
            for col, kind in t.columns:
                v = r.get(col)
                if col == t.designated or v is None or (isinstance(v, float) and v != v):
                    continue
                if kind == "symbol":
                    symbols[col] = str(v)
                elif kind == "ts":
                    columns[col] = TimestampNanos(int(v))
                elif kind == "int":
                    columns[col] = int(v)
                elif kind == "float":
                    columns[col] = float(v)
                else:
                    columns[col] = v
            buf.row(name, symbols=symbols, columns=columns, at=TimestampNanos(int(r[t.designated])))
            n += 1
        if n:
            self._retry(lambda: self.sender.flush(buf, clear=False), f"write {n} rows to {name}")
        return n

    def _retry(self, fn: Any, what: str) -> Any:
        delay = 0.2
        while True:
            try:
                return fn()
            except Exception as exc:  # the server or the network: keep the rows, wait, try again
                self.failures += 1
                logger.warning("QuestDB %s failed (%s); retrying in %.1fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                if what.startswith("write"):
                    self._reconnect()

    def _reconnect(self) -> None:
        try:
            self.sender.close()
        except Exception:  # closing a broken sender may fail the same way; a new one follows
            logger.debug("closing the QuestDB sender failed", exc_info=True)
        self.sender = Sender.from_conf(self._conf)
        try:
            self.sender.establish()  # type: ignore[no-untyped-call]  # as above
        except Exception:  # still down: the next retry tries again
            logger.debug("QuestDB still unreachable", exc_info=True)

    def close(self) -> None:
        self.sender.close()
