"""QuestDB writer: tables created over HTTP SQL with ``DEDUP UPSERT KEYS``, rows sent over ILP/HTTP.

Failures are of two kinds. *Permanent* ones (a URL that is not http(s), a server that refuses the connection or does
not resolve at start, refused credentials, rejected DDL or rows) fail at once with an error naming the setting.
*Transient* ones (QuestDB restarting, a network blip, a 5xx) are retried with capped, jittered exponential backoff
and the rows kept, for at most ``CCF_QUESTDB__RETRY_TIMEOUT_S`` in all (the default rides out a restart), then a
:class:`SinkError` names the URL and that setting. Dedup keys make a retried or replayed write harmless.
:func:`check_questdb` is the start-up check the features flow's sink runs when it is made, before the dataflow runs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx
from questdb import QuestDBError, QuestDBErrorCode, Sender, TimestampNanos

from ccf.backoff import backoff_delay
from ccf.errors import ConfigError, SinkError
from ccf.settings import QuestDBSettings
from ccf.store.tables import Table

logger = logging.getLogger(__name__)

T = TypeVar("T")

_QDB_TYPES = {"ts": "TIMESTAMP", "symbol": "SYMBOL", "str": "VARCHAR", "float": "DOUBLE", "int": "LONG",
              "bool": "BOOLEAN"}

URL_VAR = "CCF_QUESTDB__HTTP_URL"
ILP_URL_VAR = "CCF_QUESTDB__ILP_HTTP_URL"
RETRY_VAR = "CCF_QUESTDB__RETRY_TIMEOUT_S"

# ILP client errors that retrying cannot cure: the configuration or the rows themselves
_PERMANENT_ILP = frozenset({
    QuestDBErrorCode.InvalidApiCall, QuestDBErrorCode.InvalidUtf8, QuestDBErrorCode.InvalidName,
    QuestDBErrorCode.InvalidTimestamp, QuestDBErrorCode.AuthError, QuestDBErrorCode.TlsError,
    QuestDBErrorCode.HttpNotSupported, QuestDBErrorCode.ConfigError, QuestDBErrorCode.BadDataFrame,
    QuestDBErrorCode.ServerRejection, QuestDBErrorCode.ServerSchemaMismatch, QuestDBErrorCode.ServerParseError,
    QuestDBErrorCode.ServerSecurityError,
})
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def create_sql(table: Table) -> str:
    """QuestDB DDL: designated timestamp, daily partitions, WAL, dedup on the table's keys.

    >>> from ccf.store.tables import HEALTH
    >>> print(create_sql(HEALTH))
    CREATE TABLE IF NOT EXISTS "health" ("ts" TIMESTAMP, "venue" SYMBOL, "symbol" SYMBOL, "kind" SYMBOL, "value" DOUBLE, "detail" VARCHAR, "seq" LONG) TIMESTAMP("ts") PARTITION BY DAY WAL DEDUP UPSERT KEYS("ts", "venue", "symbol", "kind", "seq")
    """
    cols = ", ".join(f'"{n}" {_QDB_TYPES[k]}' for n, k in table.columns)
    keys = ", ".join(f'"{k}"' for k in table.keys)
    return (
        f'CREATE TABLE IF NOT EXISTS "{table.name}" ({cols}) TIMESTAMP("{table.designated}") '
        f"PARTITION BY DAY WAL DEDUP UPSERT KEYS({keys})"
    )


class QuestDBHTTPError(SinkError):
    """QuestDB answered over HTTP with an error (``status`` 0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def http_sql(http_url: str, sql: str, timeout: float = 30.0) -> dict[str, Any]:
    """Run one SQL statement on QuestDB's HTTP ``/exec``; raise :class:`SinkError` with QuestDB's message."""
    resp = httpx.get(f"{http_url.rstrip('/')}/exec", params={"query": sql}, timeout=timeout)
    try:
        body: dict[str, Any] = resp.json()
    except ValueError:
        body = {"error": resp.text[:200]}
    if resp.status_code != 200 or "error" in body:
        raise QuestDBHTTPError(f"QuestDB at {http_url} rejected {sql[:80]!r}: HTTP {resp.status_code} "
                               f"{body.get('error', resp.text[:200])}", resp.status_code)
    return body


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may succeed: network trouble, timeouts, 5xx; not bad settings, rows or DDL."""
    if isinstance(exc, QuestDBError):
        return exc.code not in _PERMANENT_ILP
    if isinstance(exc, QuestDBHTTPError):
        return exc.status in _RETRY_STATUS
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol)


def check_questdb(q: QuestDBSettings) -> None:
    """Fail fast, in one line naming the setting, when the configured QuestDB cannot be used at all.

    Checks the URL schemes and that ``SELECT 1`` answers within ``connect_timeout_s``. Raises :class:`ConfigError`.

    >>> check_questdb(QuestDBSettings(http_url="127.0.0.1:9000"))
    Traceback (most recent call last):
    ccf.errors.ConfigError: CCF_QUESTDB__HTTP_URL='127.0.0.1:9000' is not an http:// or https:// URL
    """
    for var, url in ((URL_VAR, q.http_url), (ILP_URL_VAR, q.ilp_http_url)):
        if url and httpx.URL(url).scheme not in ("http", "https"):
            raise ConfigError(f"{var}={url!r} is not an http:// or https:// URL")
    try:
        http_sql(q.http_url, "SELECT 1", timeout=q.connect_timeout_s)
    except (httpx.ConnectError, httpx.TimeoutException) as exc:
        raise ConfigError(f"QuestDB at {URL_VAR}={q.http_url} cannot be reached ({_reason(exc)}); start it or fix "
                          f"{URL_VAR}") from exc
    except httpx.TransportError as exc:
        raise ConfigError(f"QuestDB at {URL_VAR}={q.http_url} failed ({_reason(exc)}); fix {URL_VAR}") from exc
    except QuestDBHTTPError as exc:
        hint = " (credentials refused)" if exc.status in (401, 403) else ""
        raise ConfigError(f"QuestDB at {URL_VAR}={q.http_url} does not answer SQL{hint}: {exc}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


class QuestDBWriter:
    """Creates the tables once, then upserts rows through ILP over HTTP (see the module docstring for retries)."""

    def __init__(
        self,
        http_url: str,
        tables: Sequence[Table],
        ilp_url: str | None = None,
        table_prefix: str = "",
        max_backoff_s: float = 10.0,
        retry_timeout_s: float = 120.0,
        initial_backoff_s: float = 0.2,
    ) -> None:
        self.http_url = http_url.rstrip("/")
        self.prefix = table_prefix
        self.tables = {t.name: t for t in tables}
        self.max_backoff_s = max_backoff_s
        self.initial_backoff_s = initial_backoff_s
        self.retry_timeout_s = retry_timeout_s
        self.failures = 0
        self._rng = random.Random()
        addr = (ilp_url or http_url).split("://", 1)[-1].rstrip("/")
        self._conf = f"http::addr={addr};auto_flush=off;retry_timeout=2000;"
        try:
            for t in tables:  # at start a refused connection is a wrong URL, not a restart: fail at once
                self._retry(lambda t=t: http_sql(self.http_url, create_sql(self._named(t))),  # the default binds the loop variable
                            f"create table {self.prefix + t.name}", transient=_transient_at_start)
        except SinkError as exc:
            raise ConfigError(f"{exc} (check {URL_VAR}, CCF_QUESTDB__TABLE_PREFIX)") from exc
        self.sender = Sender.from_conf(self._conf)
        self.sender.establish()  # type: ignore[no-untyped-call]  # the client's stub leaves it untyped
        self._broken = False

    @classmethod
    def from_settings(cls, q: QuestDBSettings, tables: Sequence[Table]) -> QuestDBWriter:
        return cls(q.http_url, tables, ilp_url=q.ilp_url, table_prefix=q.table_prefix,
                   retry_timeout_s=q.retry_timeout_s)

    def high_water(self, table: str, ts: str, by: Sequence[str]) -> dict[tuple[str, ...], int]:
        """The newest ``ts`` (microseconds) per ``by`` series in ``table`` (see :mod:`ccf.store.high_water`), once
        the table's write-ahead log is applied (rows a killed run committed are not yet visible until then)."""
        name = self.prefix + table
        self._wal_applied(name)
        cols = ", ".join(f'"{c}"' for c in by)
        sql = f'SELECT {cols}, cast(max("{ts}") AS LONG) FROM "{name}" GROUP BY {cols}'
        body = self._retry(lambda: http_sql(self.http_url, sql), f"read of {name}")
        return {tuple(str(v) for v in r[:-1]): int(r[-1]) for r in body.get("dataset", []) if r[-1] is not None}

    def _wal_applied(self, name: str, wait_s: float = 30.0) -> None:
        sql = f"SELECT writerTxn, sequencerTxn, suspended FROM wal_tables() WHERE name = '{name}'"
        deadline = time.monotonic() + wait_s
        while True:
            rows = self._retry(lambda: http_sql(self.http_url, sql), f"WAL state of {name}").get("dataset", [])
            if not rows or rows[0][0] >= rows[0][1] or rows[0][2]:
                return
            if time.monotonic() > deadline:
                logger.warning("QuestDB has not applied %s's write-ahead log after %.0f s", name, wait_s)
                return
            time.sleep(0.2)

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
            self._retry(lambda: self._flush(buf), f"write of {n} rows to {name}")
        return n

    def _flush(self, buf: Any) -> None:
        if self._broken:  # a failed flush leaves the sender unusable: a new one, in the retried call
            self._open_sender()
        try:
            self.sender.flush(buf, clear=False)
        except QuestDBError:
            self._broken = True
            raise

    def _retry(self, fn: Any, what: str, *, transient: Any = is_transient) -> Any:
        def failed(exc: BaseException, tries: int, delay: float) -> None:
            self.failures += 1
            logger.warning("QuestDB %s at %s failed (%s); retry %d in %.1fs", what, self.http_url, _reason(exc),
                           tries, delay)

        return with_retries(fn, f"{what} at {URL_VAR}={self.http_url}", timeout_s=self.retry_timeout_s,
                            initial_s=self.initial_backoff_s, max_s=self.max_backoff_s, rng=self._rng,
                            transient=transient, on_retry=failed)

    def _open_sender(self) -> None:
        try:
            self.sender.close()
        except Exception:  # closing a broken sender may fail the same way; a new one follows
            logger.debug("closing the QuestDB sender failed", exc_info=True)
        sender = Sender.from_conf(self._conf)
        sender.establish()  # type: ignore[no-untyped-call]  # still down: raises, and the retry tries again
        self.sender, self._broken = sender, False

    def close(self) -> None:
        self.sender.close()


def with_retries(
    fn: Callable[[], T],
    what: str,
    *,
    timeout_s: float,
    initial_s: float = 0.2,
    max_s: float = 10.0,
    rng: random.Random | None = None,
    transient: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``, retried with capped, jittered exponential backoff while its errors are ``transient``, for at most
    ``timeout_s`` in all; then (or at once for a permanent error) :class:`SinkError` naming ``what``."""
    rng = rng or random.Random()
    t0 = time.monotonic()
    tries = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # classified: permanent errors and an exhausted budget raise SinkError
            tries += 1
            if not transient(exc):
                raise SinkError(f"QuestDB {what} failed: {_reason(exc)}") from exc
            elapsed = time.monotonic() - t0
            delay = backoff_delay(tries, initial_s, max_s, rng)
            if elapsed + delay > timeout_s:
                raise SinkError(f"QuestDB {what} still failing after {elapsed:.0f} s and {tries} tries "
                                f"({_reason(exc)}); is QuestDB up? ({RETRY_VAR}={timeout_s:g})") from exc
            if on_retry is not None:
                on_retry(exc, tries, delay)
            sleep(delay)


def _transient_at_start(exc: BaseException) -> bool:
    # refused or unresolvable when the writer starts: the URL is wrong (or QuestDB is not up): not worth waiting for
    return is_transient(exc) and not isinstance(exc, httpx.ConnectError)
